//! The Helm chart (`helm/entitlements`) is linted and rendered by Helm's own SDK and the rendered
//! manifests are validated against Kubernetes schemas: this runs the pytest suite in
//! `tests/helm/` (`python3 -m pytest -q tests/helm`).
//!
//! It needs Python 3.11+ with the PyPI packages `helm-python-sdk` (Helm v4, module
//! `helm_python`), `kubernetes-validate` and `pytest`:
//!
//! ```sh
//! python3 -m pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pytest==9.2.0
//! cargo test --test helm -- --ignored
//! ```
//!
//! Because it needs them, the test is `#[ignore]`d: `cargo test` lists it as ignored. Run it with
//! `cargo test --test helm -- --ignored`; when run without them it fails, saying what is missing.

use std::path::Path;
use std::process::{Command, Output};

const MODULES: [&str; 3] = ["helm_python", "kubernetes_validate", "pytest"];

fn python(args: &[&str]) -> std::io::Result<Output> {
    Command::new("python3")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // Leave no __pycache__ or .pytest_cache behind in the work tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
}

/// Why the suite cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let probe = format!("import {}", MODULES.join(", "));
    match python(&["-c", &probe]) {
        Err(e) => Some(format!("python3 cannot be started: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "the Python modules {} are not importable ({}); install them with \
             `python3 -m pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pytest==9.2.0`",
            MODULES.join(", "),
            String::from_utf8_lossy(&out.stderr).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
        )),
        Ok(_) => None,
    }
}

#[test]
#[ignore = "needs the Helm SDK: python3 -m pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pytest==9.2.0 and run with -- --ignored"]
fn helm_chart_lints_renders_and_validates() {
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/entitlements/Chart.yaml").is_file());
    if let Some(why) = missing_prerequisite() {
        panic!("the Helm chart suite cannot run: {why}");
    }
    let out = python(&["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/helm"]).expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "python3 -m pytest -q tests/helm failed ({}):\n{stdout}\n{stderr}", out.status);
    // pytest exits 5 when it collects nothing; a success must have run tests.
    assert!(stdout.contains(" passed"), "pytest ran no test:\n{stdout}");
}
