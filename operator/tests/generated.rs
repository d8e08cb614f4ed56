//! Checks of files generated from the code: the CRD in `crds/` and in the
//! Helm chart must be what `gocommerce-operator crd` prints, and every example
//! must render.

use std::path::{Path, PathBuf};

use gocommerce_operator::render;

/// The checkout being tested, read when the test runs: a binary compiled in
/// another clone sharing the target directory must not read that clone.
fn repo() -> PathBuf {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets it");
    Path::new(&manifest_dir).join("..")
}

#[test]
fn committed_crds_match_the_code() {
    let generated = render::crd_yaml().expect("crd renders");
    for file in [
        "crds/gocommerce.yaml",
        "helm/gocommerce-operator/crds/gocommerce.yaml",
    ] {
        let committed = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
        assert!(
            committed == generated,
            "{file} is out of date: run `make crds` (gocommerce-operator crd > {file})"
        );
    }
}

#[test]
fn every_example_renders() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let out = render::render(&path.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(out.contains("kind: Deployment"), "{}", path.display());
        seen += 1;
    }
    assert!(
        seen >= 3,
        "examples/ holds the minimal, shared and external examples"
    );
}

#[test]
fn the_external_example_uses_the_ports_of_its_secrets() {
    let text = std::fs::read_to_string(repo().join("examples/gocommerce-external.yaml"))
        .expect("readable");
    let out = render::render("external", &text).expect("renders");
    assert!(
        !out.contains("kind: StatefulSet"),
        "external mode runs no datastore"
    );
    // amqps://…:5671 from the broker Secret opens egress on 5671.
    assert!(out.contains("port: 5671"), "{out}");
}
