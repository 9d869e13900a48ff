//! The deploy files (deploy/) checked against the real `ofctl` binary, since no cluster runs
//! here: every subcommand and flag the containers run exists in that subcommand's `--help`,
//! ports agree with the listen arguments and the binary's defaults, probes hit endpoints the
//! binary serves, every variable the Secret sets is one ofctl reads (and every variable it
//! needs without a default is set), the manifest ConfigMap rebuilds desired-state/ exactly and
//! `ofctl validate` accepts it with the cluster's ofctl.toml.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use support::{ofctl, repo_root};
use yaml_rust2::{Yaml, YamlLoader};

/// What `--management-listen` serves (README "Deployment"): read-only, no credentials.
const MANAGEMENT_ENDPOINTS: &[&str] = &["/management/v1/health", "/healthz", "/readyz", "/metrics"];
/// What `--listen` serves: the platform API only.
const API_PREFIX: &str = "/v1/";

fn deploy() -> PathBuf {
    repo_root().join("deploy")
}

fn k8s() -> PathBuf {
    deploy().join("kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document under deploy/kubernetes and deploy/switchover, with its file.
fn documents() -> Vec<(PathBuf, Yaml)> {
    let mut out = Vec::new();
    let mut dirs = vec![k8s(), deploy().join("switchover")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let docs = YamlLoader::load_from_str(&read(&path))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.extend(docs.into_iter().map(|d| (path.clone(), d)));
            }
        }
    }
    assert!(
        out.len() >= 8,
        "deploy/kubernetes has too few documents: {}",
        out.len()
    );
    out
}

fn of_kind(kind: &str) -> Vec<(PathBuf, Yaml)> {
    documents()
        .into_iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .collect()
}

fn one(kind: &str, name: &str) -> Yaml {
    let found: Vec<_> = of_kind(kind)
        .into_iter()
        .filter(|(_, d)| d["metadata"]["name"].as_str() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    found[0].1.clone()
}

fn s(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn list(y: &Yaml) -> &Vec<Yaml> {
    y.as_vec().unwrap_or_else(|| panic!("not a list: {y:?}"))
}

/// The pod spec of the Deployment `ofctl` and of the CronJob `ofctl-drift`.
fn pod_specs() -> Vec<(&'static str, Yaml)> {
    vec![
        (
            "Deployment/ofctl",
            one("Deployment", "ofctl")["spec"]["template"]["spec"].clone(),
        ),
        (
            "CronJob/ofctl-drift",
            one("CronJob", "ofctl-drift")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                .clone(),
        ),
    ]
}

/// The single container that runs ofctl in a pod spec.
fn ofctl_container(spec: &Yaml) -> Yaml {
    let containers = list(&spec["containers"]);
    let ours: Vec<_> = containers
        .iter()
        .filter(|c| s(&c["image"]).contains("/ofctl:"))
        .collect();
    assert_eq!(ours.len(), 1, "one ofctl container: {containers:?}");
    ours[0].clone()
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&deploy().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            current.push_str(stripped);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if !current.trim().is_empty() {
            let (op, rest) = current
                .trim()
                .split_once(' ')
                .unwrap_or((current.trim(), ""));
            out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        }
        current.clear();
    }
    out
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not an exec-form array `{text}`: {e}"))
}

/// Every ofctl command line in the deploy files: (where, argv after `ofctl`).
fn invocations() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (what, spec) in pod_specs() {
        let c = ofctl_container(&spec);
        assert!(
            c["command"].is_badvalue(),
            "{what}: the image's ENTRYPOINT is ofctl"
        );
        out.push((what.to_string(), list(&c["args"]).iter().map(s).collect()));
    }
    let docker = dockerfile();
    let entry: Vec<_> = docker.iter().filter(|(op, _)| op == "ENTRYPOINT").collect();
    assert_eq!(entry.len(), 1);
    assert_eq!(json_array(&entry[0].1), ["ofctl"]);
    let cmd: Vec<_> = docker.iter().filter(|(op, _)| op == "CMD").collect();
    assert_eq!(cmd.len(), 1);
    out.push(("Dockerfile CMD".into(), json_array(&cmd[0].1)));
    out
}

fn help(sub: &str) -> String {
    let run = ofctl(&[sub, "--help"], &[]);
    assert_eq!(run.code, 0, "ofctl {sub} --help: {run:?}");
    run.stdout
}

/// `--listen` / `--management-listen` values of an argv.
fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_string)
        }
    })
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in `{addr}`"))
}

/// The built-in default of a listen flag in `ofctl watch --help`, which reads
/// "(default: `[api] listen`, else ADDR)": the config may set it, so clap shows no default.
fn help_default(help: &str, flag: &str) -> String {
    let start = help
        .find(&format!("{flag} <"))
        .unwrap_or_else(|| panic!("`{flag}` not in ofctl watch --help:\n{help}"));
    let rest = &help[start..];
    let next_flag = rest[2..].find("\n  -").map_or(rest.len(), |i| i + 2);
    let section = &rest[..next_flag];
    let d = section
        .find(", else ")
        .unwrap_or_else(|| panic!("`{flag}` has no default in:\n{section}"));
    section[d + ", else ".len()..]
        .split(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect::<String>()
}

#[test]
fn every_subcommand_and_flag_the_deploy_files_run_exists_in_the_binary() {
    let invocations = invocations();
    assert_eq!(invocations.len(), 3);
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for (what, argv) in &invocations {
        let sub = argv.first().unwrap_or_else(|| panic!("{what}: no args"));
        let text = helps.entry(sub.clone()).or_insert_with(|| help(sub));
        for arg in argv.iter().skip(1) {
            if let Some(long) = arg.strip_prefix("--") {
                let name = long.split('=').next().unwrap();
                assert!(
                    text.contains(&format!("--{name} ")) || text.contains(&format!("--{name}\n")),
                    "{what}: `ofctl {sub}` has no `--{name}`:\n{text}"
                );
            } else if arg.starts_with('-') && arg.len() == 2 {
                assert!(
                    text.contains(&format!("  {arg}, --")),
                    "{what}: `ofctl {sub}` has no `{arg}`:\n{text}"
                );
            }
        }
    }
    // The long-running containers run watch on /manifest, the CronJob drift.
    let subs: Vec<_> = invocations.iter().map(|(_, a)| a[0].as_str()).collect();
    assert_eq!(subs, ["watch", "drift", "watch"]);
    for (what, argv) in &invocations {
        assert_eq!(
            flag_value(argv, "-f").as_deref(),
            Some("/manifest"),
            "{what}"
        );
    }
}

#[test]
fn ports_agree_with_the_listen_arguments_and_the_binary_defaults() {
    let watch_help = help("watch");
    let api_default = port_of(&help_default(&watch_help, "--listen"));
    let management_default = port_of(&help_default(&watch_help, "--management-listen"));
    assert_eq!((api_default, management_default), (8095, 8096));

    let deployment = one("Deployment", "ofctl");
    let spec = &deployment["spec"]["template"]["spec"];
    let c = ofctl_container(spec);
    let ports: BTreeMap<String, u16> = list(&c["ports"])
        .iter()
        .map(|p| (s(&p["name"]), s(&p["containerPort"]).parse().unwrap()))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("http".into(), 8095), ("management".into(), 8096)])
    );

    // The containers listen on all interfaces, on the ports the pod declares.
    for (what, argv) in invocations().iter().filter(|(_, a)| a[0] == "watch") {
        let listen = flag_value(argv, "--listen").unwrap_or_else(|| panic!("{what}: --listen"));
        let management = flag_value(argv, "--management-listen")
            .unwrap_or_else(|| panic!("{what}: --management-listen"));
        assert_eq!(listen, "0.0.0.0:8095", "{what}");
        assert_eq!(management, "0.0.0.0:8096", "{what}");
    }
    let exposed: BTreeSet<u16> = dockerfile()
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([8095, 8096]));

    // The cluster ofctl.toml says the same as the arguments.
    let toml: toml::Table = read(&k8s().join("ofctl.toml")).parse().unwrap();
    assert_eq!(toml["api"]["listen"].as_str(), Some("0.0.0.0:8095"));
    assert_eq!(
        toml["api"]["management_listen"].as_str(),
        Some("0.0.0.0:8096")
    );

    // Services: the named ports exist in the pod, with the same numbers.
    let pod_labels = spec_labels(&deployment);
    let services = of_kind("Service");
    let names: BTreeSet<_> = services
        .iter()
        .map(|(_, d)| s(&d["metadata"]["name"]))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["ofctl".to_string(), "openframe-management".to_string()])
    );
    for (path, svc) in &services {
        let selector = svc["spec"]["selector"].as_hash().unwrap();
        for (k, v) in selector {
            assert_eq!(
                pod_labels.get(&s(k)),
                Some(&s(v)),
                "{}: selector {k:?} matches the ofctl pods",
                path.display()
            );
        }
        let mut seen = BTreeSet::new();
        for p in list(&svc["spec"]["ports"]) {
            let name = s(&p["name"]);
            let port: u16 = s(&p["port"]).parse().unwrap();
            assert_eq!(ports.get(&name), Some(&port), "{}: {name}", path.display());
            assert_eq!(s(&p["targetPort"]), name, "{}", path.display());
            seen.insert(name);
        }
        assert_eq!(seen.len(), 2, "{}: both ports", path.display());
    }

    // NetworkPolicy: 8095 only from the platform's namespaces, 8096 from any namespace.
    let policy = one("NetworkPolicy", "ofctl");
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_hash()
        .unwrap()
    {
        assert_eq!(pod_labels.get(&s(k)), Some(&s(v)));
    }
    let rules = list(&policy["spec"]["ingress"]);
    let mut by_port: BTreeMap<u16, &Yaml> = BTreeMap::new();
    for rule in rules {
        for p in list(&rule["ports"]) {
            by_port.insert(s(&p["port"]).parse().unwrap(), rule);
        }
    }
    assert_eq!(by_port.keys().copied().collect::<Vec<_>>(), [8095, 8096]);
    let api_from = list(&by_port[&8095]["from"]);
    let namespaces: BTreeSet<String> = api_from
        .iter()
        .flat_map(|f| list(&f["namespaceSelector"]["matchExpressions"]))
        .filter(|e| s(&e["key"]) == "kubernetes.io/metadata.name" && s(&e["operator"]) == "In")
        .flat_map(|e| list(&e["values"]).iter().map(s))
        .collect();
    for ns in [
        "microservices",
        "platform",
        "integrated-tools",
        "datasources",
    ] {
        assert!(namespaces.contains(ns), "8095 admits {ns}: {namespaces:?}");
    }
    let management_from = list(&by_port[&8096]["from"]);
    assert!(
        management_from.iter().any(|f| f["namespaceSelector"]
            .as_hash()
            .is_some_and(|h| h.is_empty())),
        "8096 from every namespace"
    );
}

fn spec_labels(deployment: &Yaml) -> BTreeMap<String, String> {
    deployment["spec"]["template"]["metadata"]["labels"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| (s(k), s(v)))
        .collect()
}

#[test]
fn probes_and_scrapes_hit_management_endpoints_the_binary_serves() {
    let readme = read(&repo_root().join("README.md"));
    for path in MANAGEMENT_ENDPOINTS {
        assert!(readme.contains(path), "README documents {path}");
    }
    let deployment = one("Deployment", "ofctl");
    let c = ofctl_container(&deployment["spec"]["template"]["spec"]);
    let mut probed = BTreeMap::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[probe].is_badvalue() {
            continue;
        }
        let get = &c[probe]["httpGet"];
        let path = s(&get["path"]);
        assert!(
            MANAGEMENT_ENDPOINTS.contains(&path.as_str()),
            "{probe} {path} is not a management endpoint"
        );
        assert!(!path.starts_with(API_PREFIX));
        assert_eq!(s(&get["port"]), "management", "{probe} on 8096");
        probed.insert(probe, path);
    }
    assert_eq!(probed["livenessProbe"], "/healthz");
    // Ready = what the platform's register jobs poll before they POST.
    assert_eq!(probed["readinessProbe"], "/management/v1/health");
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(s(&annotations["prometheus.io/port"]), "8096");
    assert!(MANAGEMENT_ENDPOINTS.contains(&s(&annotations["prometheus.io/path"]).as_str()));
}

/// The probe paths answered by the real binary on the management listener, as the kubelet would
/// call them, with an empty manifest (its first pass has nothing to do).
#[test]
fn the_binary_serves_the_probe_paths_on_the_management_port() {
    let m = support::ManifestDir::new();
    m.write(
        "ofctl.toml",
        "[api]\ntoken = \"${env:OFCTL_API_TOKEN}\"\nallow_unauthenticated = false\n",
    );
    // The harness passes --listen and --management-listen on free ports.
    let watch = support::Watch::start(&["-f", m.arg()]);
    let addr = watch.management.trim_start_matches("http://").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let get = |path: &'static str| {
            let url = format!("http://{addr}{path}");
            async move {
                match reqwest::get(&url).await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.text().await.unwrap_or_default())
                    }
                    Err(e) => (0, e.to_string()),
                }
            }
        };
        let ready = support::Watch::until(std::time::Duration::from_secs(30), || async {
            get("/management/v1/health").await.0 == 200
        })
        .await;
        assert!(ready.is_some(), "not healthy in 30 s:\n{}", watch.log());
        let (_, body) = get("/management/v1/health").await;
        let body: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
        assert_eq!(body["status"], "UP");
        for path in MANAGEMENT_ENDPOINTS {
            let (status, body) = get(path).await;
            assert_eq!(status, 200, "GET {path} on the management port: {body}");
        }
        // The management listener serves no platform API.
        let (status, _) = get("/v1/tools").await;
        assert_ne!(status, 200, "/v1/tools must not be on the management port");
    });
}

/// `${env:NAME` references in a text.
fn env_refs(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${env:") {
        rest = &rest[i + "${env:".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let has_default = rest[name.len()..].starts_with(":-");
        out.push((name, has_default));
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Variables read from the environment: every `${env:NAME` of the shipped desired state (its
/// ofctl.toml and manifest files) and of the cluster's ofctl.toml, with whether each has a
/// default everywhere it is used; plus the two the binary reads itself.
fn variables_read() -> BTreeMap<String, bool> {
    let mut sources = files_under(&repo_root().join("desired-state"));
    sources.push(k8s().join("ofctl.toml"));
    let mut vars: BTreeMap<String, bool> = BTreeMap::new();
    for path in sources {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // The desired-state/ofctl.toml is replaced by the cluster's in the ConfigMap.
        if path == repo_root().join("desired-state/ofctl.toml") {
            for (name, _) in env_refs(&text) {
                vars.entry(name).or_insert(true);
            }
            continue;
        }
        for (name, has_default) in env_refs(&text) {
            let entry = vars.entry(name).or_insert(true);
            *entry = *entry && has_default;
        }
    }
    for name in ["OFCTL_LOG", "OFCTL_API_TOKEN"] {
        vars.entry(name.to_string()).or_insert(true);
    }
    vars
}

/// The example Secret's variables.
fn secret_example() -> BTreeMap<String, String> {
    let docs = YamlLoader::load_from_str(&read(&k8s().join("secret.example.yaml"))).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(s(&docs[0]["kind"]), "Secret");
    assert_eq!(s(&docs[0]["metadata"]["name"]), "ofctl-credentials");
    docs[0]["stringData"]
        .as_hash()
        .expect("stringData")
        .iter()
        .map(|(k, v)| (s(k), s(v)))
        .collect()
}

#[test]
fn every_variable_the_pods_get_is_read_and_every_required_one_is_set() {
    let read_vars = variables_read();
    let secret = secret_example();
    for name in secret.keys() {
        assert!(
            read_vars.contains_key(name),
            "secret.example.yaml sets {name}, which neither desired-state/, the cluster ofctl.toml nor the binary reads"
        );
    }
    // The placeholders are placeholders.
    for (name, value) in &secret {
        assert!(
            value.contains("REPLACE_ME")
                || !(name.contains("PASSWORD") || name.contains("KEY") || name.contains("TOKEN")),
            "{name} must hold a placeholder, not a value"
        );
    }
    for (what, spec) in pod_specs() {
        let c = ofctl_container(&spec);
        let mut set: BTreeSet<String> = BTreeSet::new();
        for e in c["env"].as_vec().into_iter().flatten() {
            let name = s(&e["name"]);
            assert!(
                read_vars.contains_key(&name),
                "{what}: env {name} is read by nothing"
            );
            let secret_ref = &e["valueFrom"]["secretKeyRef"];
            if !secret_ref.is_badvalue() {
                assert_eq!(s(&secret_ref["name"]), "ofctl-credentials", "{what}");
                assert!(
                    secret.contains_key(&s(&secret_ref["key"])),
                    "{what}: {name}"
                );
            }
            set.insert(name);
        }
        let from = list(&c["envFrom"]);
        assert_eq!(from.len(), 1, "{what}");
        assert_eq!(
            s(&from[0]["secretRef"]["name"]),
            "ofctl-credentials",
            "{what}"
        );
        set.extend(secret.keys().cloned());
        // Without a default, a variable missing from the pod stops ofctl (an unresolved
        // placeholder): each must come from the Secret or the container's env.
        for (name, has_default) in &read_vars {
            if !has_default {
                assert!(set.contains(name), "{what}: nothing sets {name}");
            }
        }
        assert!(set.contains("OFCTL_API_TOKEN"), "{what}");
    }
}

/// The ofctl-manifest ConfigMap and the volume items, rebuilt into a folder.
fn rebuild_manifest(into: &Path) -> BTreeMap<String, String> {
    let cm = one("ConfigMap", "ofctl-manifest");
    let data: BTreeMap<String, String> = cm["data"]
        .as_hash()
        .expect("data")
        .iter()
        .map(|(k, v)| (s(k), s(v)))
        .collect();
    let mut items_seen: Option<Vec<(String, String)>> = None;
    for (what, spec) in pod_specs() {
        let volume = list(&spec["volumes"])
            .iter()
            .find(|v| s(&v["name"]) == "manifest")
            .unwrap_or_else(|| panic!("{what}: no manifest volume"))
            .clone();
        assert_eq!(s(&volume["configMap"]["name"]), "ofctl-manifest", "{what}");
        let items: Vec<(String, String)> = list(&volume["configMap"]["items"])
            .iter()
            .map(|i| (s(&i["key"]), s(&i["path"])))
            .collect();
        let mount = list(&ofctl_container(&spec)["volumeMounts"])
            .iter()
            .find(|m| s(&m["name"]) == "manifest")
            .map(|m| s(&m["mountPath"]));
        assert_eq!(mount.as_deref(), Some("/manifest"), "{what}");
        if let Some(previous) = &items_seen {
            assert_eq!(previous, &items, "{what}: same items as the Deployment");
        }
        items_seen = Some(items);
    }
    let items = items_seen.unwrap();
    let keys: BTreeSet<_> = items.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        data.keys().cloned().collect::<BTreeSet<_>>(),
        "every key has an item"
    );
    let mut files = BTreeMap::new();
    for (key, path) in items {
        assert!(!path.starts_with('/') && !path.contains(".."), "{path}");
        let target = into.join(&path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, &data[&key]).unwrap();
        files.insert(path, data[&key].clone());
    }
    files
}

#[test]
fn the_manifest_configmap_is_desired_state_with_the_cluster_config() {
    let dir = tempfile::tempdir().unwrap();
    let files = rebuild_manifest(dir.path());
    let desired = repo_root().join("desired-state");
    let mut expected = BTreeMap::new();
    for path in files_under(&desired) {
        let rel = path
            .strip_prefix(&desired)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        let text = if rel == "ofctl.toml" {
            read(&k8s().join("ofctl.toml"))
        } else {
            read(&path)
        };
        expected.insert(rel, text);
    }
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the ConfigMap has exactly desired-state's files: run deploy/kubernetes/gen-manifest.py"
    );
    for (path, text) in &expected {
        assert!(
            &files[path] == text,
            "{path} differs in the ConfigMap: run deploy/kubernetes/gen-manifest.py"
        );
    }
    // The cluster config keeps every variable of the shipped one (the Pinot placeholders).
    let shipped: toml::Table = read(&desired.join("ofctl.toml")).parse().unwrap();
    let cluster: toml::Table = read(&k8s().join("ofctl.toml")).parse().unwrap();
    assert_eq!(shipped["variables"], cluster["variables"]);
    for section in ["nats", "mongo", "tactical", "kafka", "pinot", "connect"] {
        assert_eq!(shipped[section], cluster[section], "[{section}]");
    }
    assert_eq!(
        cluster["api"]["token"].as_str(),
        Some("${env:OFCTL_API_TOKEN}")
    );
    assert_eq!(
        cluster["api"]["allow_unauthenticated"].as_bool(),
        Some(false)
    );
    assert!(cluster["redis"]["url"]
        .as_str()
        .unwrap()
        .starts_with("${env:OFCTL_REDIS_URL"));
}

/// `ofctl validate` on what the pods mount, with only the example Secret's variables set: every
/// `[section] key` of the cluster ofctl.toml is accepted and every placeholder resolves. Also
/// each ofctl.toml elsewhere under deploy/, next to desired-state's manifest.
#[test]
fn ofctl_validate_accepts_the_mounted_manifest_and_every_deploy_config() {
    let secret = secret_example();
    let env: Vec<(&str, &str)> = secret
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    rebuild_manifest(dir.path());
    let run = ofctl(&["validate", "-f", dir.path().to_str().unwrap()], &env);
    assert_eq!(run.code, 0, "the mounted /manifest: {run:?}");
    assert!(run.stdout.contains("valid"), "{run:?}");

    let configs: Vec<_> = files_under(&deploy())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "ofctl.toml"))
        .collect();
    assert!(!configs.is_empty());
    for config in configs {
        let m = support::ManifestDir::new();
        m.copy_from("desired-state");
        std::fs::copy(&config, m.path().join("ofctl.toml")).unwrap();
        let run = ofctl(&["validate", "-f", m.arg()], &env);
        assert_eq!(run.code, 0, "{}: {run:?}", config.display());
    }
}

#[test]
fn pods_run_unprivileged_on_a_read_only_root_with_measured_resources() {
    let deployment = one("Deployment", "ofctl");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    for (what, spec) in pod_specs() {
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true), "{what}");
        assert!(pod["runAsUser"].as_i64().is_some_and(|u| u > 0), "{what}");
        assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false));
        let c = ofctl_container(&spec);
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{what}"
        );
        assert_eq!(list(&sc["capabilities"]["drop"])[0].as_str(), Some("ALL"));
        let requests = &c["resources"]["requests"];
        assert!(
            !requests["cpu"].is_badvalue() && !requests["memory"].is_badvalue(),
            "{what}"
        );
        assert!(!c["resources"]["limits"]["memory"].is_badvalue(), "{what}");
    }
    // Same image in both, and the one the kustomization pins.
    let images: BTreeSet<String> = pod_specs()
        .iter()
        .map(|(_, spec)| s(&ofctl_container(spec)["image"]))
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    let kustomization =
        &YamlLoader::load_from_str(&read(&k8s().join("kustomization.yaml"))).unwrap()[0];
    let pinned = &list(&kustomization["images"])[0];
    let image = images.into_iter().next().unwrap();
    assert_eq!(
        image,
        format!("{}:{}", s(&pinned["name"]), s(&pinned["newTag"]))
    );
    // The measured figures are written next to the requests.
    let text = read(&k8s().join("deployment.yaml"));
    assert!(
        text.contains("scripts/measure-watch.sh"),
        "requests say where they come from"
    );

    // The kustomization lists every manifest of the folder except the Secret example.
    let listed: BTreeSet<String> = list(&kustomization["resources"]).iter().map(s).collect();
    let present: BTreeSet<String> = std::fs::read_dir(k8s())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml" && n != "secret.example.yaml")
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn the_dockerfile_builds_with_the_toolchain_and_runs_as_a_user() {
    let docker = dockerfile();
    let from: Vec<_> = docker.iter().filter(|(op, _)| op == "FROM").collect();
    assert_eq!(from.len(), 2, "multi-stage: {from:?}");
    let run = docker
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in ["cmake", "make", "g++", "cargo build --release --locked"] {
        assert!(run.contains(needed), "the build runs `{needed}`");
    }
    let user: Vec<_> = docker.iter().filter(|(op, _)| op == "USER").collect();
    let uid = user
        .last()
        .expect("USER")
        .1
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u > 0),
        "numeric non-root USER: {uid}"
    );
    // Every COPY from the build context names something the repository has and
    // .dockerignore keeps.
    let ignore = read(&repo_root().join(".dockerignore"));
    for dir in ["target/", ".tools/", ".stack/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == dir),
            ".dockerignore has {dir}"
        );
    }
    for (_, rest) in docker.iter().filter(|(op, _)| op == "COPY") {
        if rest.contains("--from=") {
            continue;
        }
        let parts: Vec<_> = rest
            .split_whitespace()
            .filter(|p| !p.starts_with("--"))
            .collect();
        for src in &parts[..parts.len() - 1] {
            assert!(
                repo_root().join(src).exists(),
                "COPY {src}: not in the repository"
            );
            assert!(
                !ignore
                    .lines()
                    .any(|l| l.trim().trim_end_matches('/') == *src),
                "COPY {src} is in .dockerignore"
            );
        }
    }
}

/// The committed ConfigMap and volume items are what gen-manifest.py writes (nobody edited
/// them by hand, and the generator is deterministic).
#[test]
fn gen_manifest_reproduces_the_committed_configmap_and_items() {
    let out = tempfile::tempdir().unwrap();
    for name in ["deployment.yaml", "cronjob.yaml"] {
        std::fs::copy(k8s().join(name), out.path().join(name)).unwrap();
    }
    let run = std::process::Command::new("python3")
        .arg(k8s().join("gen-manifest.py"))
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("python3 runs gen-manifest.py");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in ["manifest-configmap.yaml", "deployment.yaml", "cronjob.yaml"] {
        assert!(
            read(&out.path().join(name)) == read(&k8s().join(name)),
            "{name} is not what gen-manifest.py writes: run deploy/kubernetes/gen-manifest.py"
        );
    }
}

fn to_json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match y {
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => Value::from(r.parse::<f64>().unwrap()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(h.iter().map(|(k, v)| (s(k), to_json(v))).collect()),
        other => panic!("unexpected YAML {other:?}"),
    }
}

/// A stand-in for kubectl: `get cronjob` answers with the CronJob of cronjob.yaml, `create -f -`
/// saves the pod and runs the real ofctl with the pod's args (its exit code and output become
/// the pod's), `get pod`, `logs` and `delete pod` answer from that.
const FAKE_KUBECTL: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys
argv, d = sys.argv[1:], os.environ["FAKE_DIR"]
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    f.write(json.dumps(argv) + "\n")
ns = argv[1] if argv[:1] == ["-n"] else None
rest = argv[2:] if ns else argv
state = os.path.join(d, "pod-state.json")
if rest[:2] == ["get", "cronjob"]:
    print(open(os.environ["FAKE_CRONJOB"]).read())
elif rest[:3] == ["create", "-f", "-"]:
    pod = json.load(sys.stdin)
    json.dump(pod, open(os.path.join(d, "pod.json"), "w"))
    args = pod["spec"]["containers"][0]["args"]
    run = subprocess.run([os.environ["FAKE_OFCTL"]] + args, capture_output=True, text=True)
    json.dump({"code": run.returncode, "log": run.stdout + run.stderr}, open(state, "w"))
elif rest[:2] == ["get", "pod"]:
    s = json.load(open(state))
    if rest[-1] == "jsonpath={.status.phase}":
        print("Succeeded" if s["code"] == 0 else "Failed", end="")
    elif "exitCode" in rest[-1]:
        print(s["code"], end="")
    else:
        sys.exit(f"fake kubectl: {argv}")
elif rest[:1] == ["logs"]:
    print(json.load(open(state))["log"], end="")
elif rest[:2] == ["delete", "pod"]:
    pass
else:
    sys.exit(f"fake kubectl: unsupported {argv}")
"#;

/// `ofctl-once.sh` (the migration guide's one-off commands) builds its pod from the CronJob:
/// same image, Secret, manifest volume and security, the given args, never restarted; it
/// passes ofctl's exit code on and deletes the pod.
#[test]
fn ofctl_once_runs_one_command_in_a_pod_like_the_cronjob() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    let mut perms = std::fs::metadata(&kubectl).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&kubectl, perms).unwrap();
    let cronjob = one("CronJob", "ofctl-drift");
    std::fs::write(
        dir.path().join("cronjob.json"),
        to_json(&cronjob).to_string(),
    )
    .unwrap();
    let once = |args: &[&str]| {
        let out = std::process::Command::new("bash")
            .arg(k8s().join("ofctl-once.sh"))
            .args(args)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("FAKE_DIR", dir.path())
            .env("FAKE_CRONJOB", dir.path().join("cronjob.json"))
            .env("FAKE_OFCTL", env!("CARGO_BIN_EXE_ofctl"))
            .env_remove("OFCTL_NAMESPACE")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = once(&["--version"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ofctl "), "{out}");
    let pod: serde_json::Value = serde_json::from_str(&read(&dir.path().join("pod.json"))).unwrap();
    let job_pod = to_json(&cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]);
    let c = &pod["spec"]["containers"][0];
    let job_c = &job_pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["--version"]));
    for key in [
        "image",
        "envFrom",
        "env",
        "volumeMounts",
        "securityContext",
        "resources",
    ] {
        assert_eq!(c[key], job_c[key], "{key}");
    }
    for key in ["volumes", "securityContext", "automountServiceAccountToken"] {
        assert_eq!(pod["spec"][key], job_pod[key], "{key}");
    }
    assert_eq!(pod["spec"]["restartPolicy"], "Never");

    // ofctl's exit code comes through (1: a missing folder).
    let (code, _) = once(&["validate", "-f", "/nonexistent-manifest"]);
    assert_eq!(code, 1);
    let calls: Vec<Vec<String>> = read(&dir.path().join("calls.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        calls.iter().all(|c| c[..2] == ["-n", "microservices"]),
        "{calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c[2..4] == ["delete", "pod"])
            .count(),
        2,
        "each pod is deleted: {calls:?}"
    );
}

/// Each kustomization's resources exist, and none lies inside the folder of a kustomization it
/// includes (kustomize refuses an overlay inside its base: "cycle detected").
#[test]
fn kustomizations_name_existing_resources_outside_their_bases() {
    let mut count = 0;
    for dir in [k8s(), deploy().join("switchover")] {
        let path = dir.join("kustomization.yaml");
        let k = &YamlLoader::load_from_str(&read(&path)).unwrap()[0];
        for r in list(&k["resources"]).iter().map(s) {
            let target = dir.join(&r);
            assert!(target.exists(), "{}: {r} does not exist", path.display());
            if target.is_dir() {
                let base = target.canonicalize().unwrap();
                assert!(base.join("kustomization.yaml").is_file(), "{r}");
                assert!(
                    !dir.canonicalize().unwrap().starts_with(&base),
                    "{}: the overlay lies inside its base {r}",
                    path.display()
                );
            }
            count += 1;
        }
    }
    assert!(count >= 7);
}
