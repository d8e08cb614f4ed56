//! `render` and `crd`: the objects the operator would apply for a resource
//! file, and the CustomResourceDefinition, as YAML, without a cluster.

use std::collections::BTreeMap;

use kube::core::ObjectMeta;
use serde::Serialize;

use crate::build::{self, Desired};
use crate::crd::GoCommerce;
use crate::meta::Owner;
use crate::secrets::SecretError;
use crate::validate::{self, Lookup, Referenced, Rejection};

/// Stands in for the uid the API server would give the resource.
const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: document {index} is a {kind:?}, not a GoCommerce or a Secret")]
    NotGoCommerce {
        path: String,
        index: usize,
        kind: String,
    },
    #[error("{path}: {rejection}")]
    Rejected { path: String, rejection: Rejection },
    #[error("cannot encode YAML: {0}")]
    Encode(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Parses every GoCommerce document of a YAML stream, filling in what the
/// API server would: an empty spec, the namespace, a uid.
pub fn parse_resources(path: &str, text: &str) -> Result<Vec<GoCommerce>, RenderError> {
    parse_file(path, text).map(|(resources, _)| resources)
}

/// Parses a YAML stream of GoCommerce resources and the Secrets they refer
/// to (an example may ship both); any other kind is refused.
pub fn parse_file(path: &str, text: &str) -> Result<(Vec<GoCommerce>, Referenced), RenderError> {
    let parse = |message: String| RenderError::Parse {
        path: path.to_owned(),
        message,
    };
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| parse(e.to_string()))?;
    let mut resources = Vec::new();
    let mut referenced = Referenced::default();
    for (index, mut document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "Secret" {
            let secret: k8s_openapi::api::core::v1::Secret =
                serde_json::from_value(document).map_err(|e| parse(e.to_string()))?;
            let mut data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            let name = secret.metadata.name.unwrap_or_default();
            referenced.secrets.insert(name, Lookup::Found(data));
            continue;
        }
        if kind != "GoCommerce" {
            return Err(RenderError::NotGoCommerce {
                path: path.to_owned(),
                index,
                kind,
            });
        }
        if let Some(map) = document.as_object_mut() {
            map.entry("spec").or_insert_with(|| serde_json::json!({}));
        }
        let mut gc: GoCommerce =
            serde_json::from_value(document).map_err(|e| parse(e.to_string()))?;
        let meta: &mut ObjectMeta = &mut gc.metadata;
        meta.namespace.get_or_insert_with(|| "default".to_owned());
        meta.uid.get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
        resources.push(gc);
    }
    Ok((resources, referenced))
}

/// The desired objects of one resource, with referenced Secrets not in
/// `referenced` assumed to be right.
pub fn desired_with(gc: &GoCommerce, referenced: &Referenced) -> Result<Desired, Rejection> {
    let validated = validate::validate(gc, referenced)?;
    Ok(build::build(&validated))
}

/// The desired objects of one resource, with referenced Secrets assumed to
/// be right.
pub fn desired(gc: &GoCommerce) -> Result<Desired, Rejection> {
    desired_with(gc, &Referenced::default())
}

fn yaml<T: Serialize>(value: &T) -> Result<String, RenderError> {
    serde_saphyr::to_string(value).map_err(|e| RenderError::Encode(e.to_string()))
}

/// Every object the operator would create or apply for the resources in
/// `text`, as a YAML stream. Generated Secrets get fresh random values, as
/// they would on a first reconcile.
pub fn render(path: &str, text: &str) -> Result<String, RenderError> {
    let mut out = String::new();
    let (resources, referenced) = parse_file(path, text)?;
    for gc in resources {
        let desired =
            desired_with(&gc, &referenced).map_err(|rejection| RenderError::Rejected {
                path: path.to_owned(),
                rejection,
            })?;
        let owner = Owner::of(&gc).ok_or_else(|| RenderError::Rejected {
            path: path.to_owned(),
            rejection: Rejection::InvalidSpec("the resource has no name".to_owned()),
        })?;
        for generated in &desired.generated {
            let secret = generated.materialize(&owner, &mut rand::rngs::OsRng)?;
            let mut value =
                serde_json::to_value(&secret).map_err(|e| RenderError::Encode(e.to_string()))?;
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), "v1".into());
                map.insert("kind".into(), "Secret".into());
            }
            out.push_str("---\n");
            out.push_str(&yaml(&sorted(value))?);
        }
        for object in &desired.objects {
            out.push_str("---\n");
            out.push_str(&yaml(&sorted(object.to_value()))?);
        }
    }
    Ok(out)
}

/// The CRD as YAML, as kept in `crds/gocommerce.yaml`.
pub fn crd_yaml() -> Result<String, RenderError> {
    let value = serde_json::to_value(GoCommerce::definition())
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    yaml(&sorted(value))
}

/// Keys in a stable order, so the output diffs well.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let ordered: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(ordered.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}
