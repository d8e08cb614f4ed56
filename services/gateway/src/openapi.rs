//! The OpenAPI 3.1 document, generated from the handlers' annotations. A
//! modifier adds the error responses every route shares, so no route can
//! forget one: backend failures on every `/v1` route, validation, size and
//! media-type errors on routes with a body, and 429 on the auth routes.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::problem::{FieldError, Problem};
use crate::routes::auth;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "GoCommerce API",
        description = "The REST API of GoCommerce. Errors are application/problem+json (RFC 9457).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        auth::register,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::logout_everywhere,
        auth::change_password,
        auth::request_password_reset,
        auth::confirm_password_reset,
        auth::me,
        auth::jwks,
        crate::startup::healthz,
        crate::startup::readyz,
        crate::startup::openapi_json,
    ),
    components(schemas(Problem, FieldError, crate::startup::HealthView, crate::startup::ReadinessView)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "ops", description = "Health and the API description"),
    )
)]
pub struct ApiDoc;

/// The whole document: `ApiDoc`, every route module's fragment, then the
/// shared responses applied to all of it.
pub fn document() -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    for fragment in crate::routes::openapi_fragments() {
        doc.merge(fragment);
    }
    SharedResponses.modify(&mut doc);
    doc
}

struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/v1/");
            let auth = path.starts_with("/v1/auth/") && path != "/v1/auth/me";
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_shared(operation, api, auth);
            }
        }
    }
}

fn add_shared(operation: &mut Operation, api: bool, auth: bool) {
    let has_body = operation.request_body.is_some();
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description).into());
    };
    if has_body {
        add("400", "The request is malformed or a field is invalid");
        add("413", "The body is too large");
        add("415", "The body is not JSON");
    }
    if auth {
        add("429", "Too many requests from this client; see Retry-After");
    }
    if api {
        add("500", "An unexpected error; no detail is given");
        add(
            "503",
            "A backend service is unavailable; retry after Retry-After seconds",
        );
        add("504", "A backend service did not answer in time");
    }
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}
