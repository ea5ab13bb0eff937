//! The deployment files agree with `keeld`: `deploy/k8s/keel.yaml` and
//! `deploy/docker-compose.yml` parse; their container ports, probe paths and ports, and
//! `KEEL_*` variables match keeld's config keys and default ports and the image's
//! `deploy/Dockerfile`; the Kubernetes manifest has what a StatefulSet deployment needs
//! (headless Service, per-pod volume at the data directory, probes, PodDisruptionBudget,
//! anti-affinity, node id from the pod ordinal). Last, each pod's and each compose service's
//! environment goes through the real entrypoint (`deploy/docker-entrypoint.sh`, with a
//! stand-in `hostname`) into the real `keeld --print-config`, which must accept it and derive
//! the node id from the ordinal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_broker::config::{Config, Voters, KEYS};
use keel_tests::cluster::keeld_path;
use serde::Deserialize;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every YAML document of `path`, with merge keys (`<<: *anchor`) applied.
fn documents(path: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|d| {
            let mut v = Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}"));
            v.apply_merge().unwrap_or_else(|e| panic!("{path}: {e}"));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// The `KEEL_*` variables of keeld's config keys.
fn config_env_names() -> Vec<String> {
    KEYS.iter()
        .map(|k| format!("KEEL_{}", k.to_uppercase()))
        .collect()
}

/// The `ENV` settings of the Dockerfile's runtime stage.
fn dockerfile_env() -> BTreeMap<String, String> {
    let text = read("deploy/Dockerfile");
    let start = text.find("\nENV ").expect("an ENV instruction");
    let mut out = BTreeMap::new();
    for line in text[start + 5..].lines() {
        let line = line.trim().trim_end_matches('\\').trim();
        let Some((k, v)) = line.split_once('=') else {
            break;
        };
        out.insert(k.to_owned(), v.to_owned());
        if !text.contains(&format!("{line} \\")) {
            break;
        }
    }
    out
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// The variables the entrypoint reads besides keeld's own.
const ENTRYPOINT_ONLY: &[&str] = &["KEEL_HOST_DOMAIN"];

#[test]
fn the_image_listens_where_keeld_defaults_and_checks_healthz() {
    let env = dockerfile_env();
    let defaults = Config::default();
    let names = config_env_names();
    for k in env.keys() {
        assert!(names.contains(k), "Dockerfile sets {k}, not a keeld key");
    }
    assert_eq!(port_of(&env["KEEL_LISTEN"]), defaults.listen.port());
    assert_eq!(
        port_of(&env["KEEL_INTERNAL_LISTEN"]),
        defaults.internal_listen.port()
    );
    assert_eq!(
        port_of(&env["KEEL_HTTP_LISTEN"]),
        defaults.http_listen.port()
    );
    let text = read("deploy/Dockerfile");
    let check = text
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    let http = defaults.http_listen.port().to_string();
    assert!(
        check.contains("/healthz") && check.contains(&http),
        "{check}"
    );
    let entrypoint = read("deploy/docker-entrypoint.sh");
    for var in ["KEEL_NODE_ID", "KEEL_ADVERTISED_HOST"] {
        assert!(names.contains(&var.to_owned()) && entrypoint.contains(var));
    }
}

/// The documents of the Kubernetes manifest by kind and name.
fn k8s() -> BTreeMap<(String, String), Value> {
    documents("deploy/k8s/keel.yaml")
        .into_iter()
        .map(|d| {
            (
                (
                    s(&d["kind"]).to_owned(),
                    s(&d["metadata"]["name"]).to_owned(),
                ),
                d,
            )
        })
        .collect()
}

/// Whether `selector` (matchLabels or a plain map) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector
        .get("matchLabels")
        .unwrap_or(selector)
        .as_mapping()
        .expect("a label map");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Container ports by name.
fn named_ports(container: &Value) -> BTreeMap<String, u64> {
    container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                s(&p["name"]).to_owned(),
                p["containerPort"].as_u64().expect("port"),
            )
        })
        .collect()
}

/// The environment of a container, `$(VAR)` references expanded as Kubernetes does (from
/// earlier entries), `fieldRef`s given `namespace`.
fn container_env(container: &Value, namespace: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_sequence().expect("env") {
        let name = s(&e["name"]).to_owned();
        let mut value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(f)) if f == "metadata.namespace" => namespace.to_owned(),
            other => panic!("{name}: unsupported value {other:?}"),
        };
        for (k, v) in &out {
            value = value.replace(&format!("$({k})"), v);
        }
        out.push((name, value));
    }
    out
}

#[test]
fn the_kubernetes_manifest_agrees_with_keeld() {
    let docs = k8s();
    let kinds: Vec<&str> = docs.keys().map(|(k, _)| k.as_str()).collect();
    for kind in ["StatefulSet", "Service", "PodDisruptionBudget"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let sts = docs
        .iter()
        .find(|((k, _), _)| k == "StatefulSet")
        .map(|(_, d)| d)
        .unwrap();
    let spec = &sts["spec"];
    let pod = &spec["template"];
    let labels = &pod["metadata"]["labels"];
    assert!(selects(&spec["selector"], labels));
    let replicas = spec["replicas"].as_u64().expect("replicas");
    assert!(
        replicas >= 3 && replicas % 2 == 1,
        "an odd quorum of voters"
    );

    // The headless Service names the pods and publishes them before they are ready.
    let headless = &docs[&("Service".to_owned(), s(&spec["serviceName"]).to_owned())];
    assert_eq!(s(&headless["spec"]["clusterIP"]), "None");
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    assert!(selects(&headless["spec"]["selector"], labels));

    // Container ports are keeld's defaults, and every Service port targets one of them.
    let containers = pod["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let ports = named_ports(c);
    let defaults = Config::default();
    let want = [
        ("client", defaults.listen.port()),
        ("internal", defaults.internal_listen.port()),
        ("http", defaults.http_listen.port()),
    ];
    for (name, port) in want {
        assert_eq!(
            ports.get(name),
            Some(&u64::from(port)),
            "container port {name}"
        );
    }
    for ((kind, name), d) in &docs {
        if kind != "Service" {
            continue;
        }
        for p in d["spec"]["ports"].as_sequence().unwrap() {
            assert_eq!(
                ports.get(s(&p["name"])),
                p["port"].as_u64().as_ref(),
                "{name}: {p:?}"
            );
        }
    }

    // Probes: /healthz for liveness (and start-up), /readyz for readiness, on the HTTP port.
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        let port = match &get["port"] {
            Value::String(name) => ports[name.as_str()],
            other => other.as_u64().expect("a port"),
        };
        assert_eq!(port, u64::from(defaults.http_listen.port()), "{probe}");
    }

    // A volume per pod, mounted where the image keeps its data.
    let data_dir = dockerfile_env()["KEEL_DATA_DIR"].clone();
    let claims = spec["volumeClaimTemplates"]
        .as_sequence()
        .expect("volume claims");
    let claim = s(&claims[0]["metadata"]["name"]);
    let mounts = c["volumeMounts"].as_sequence().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| s(&m["name"]) == claim && s(&m["mountPath"]) == data_dir),
        "{claim} not mounted at {data_dir}"
    );

    // Disruptions and placement: one pod down at a time, one pod per node.
    let pdb = docs
        .iter()
        .find(|((k, _), _)| k == "PodDisruptionBudget")
        .unwrap()
        .1;
    assert!(selects(&pdb["spec"]["selector"], labels));
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    let anti = &pod["spec"]["affinity"]["podAntiAffinity"];
    let term = &anti["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert!(selects(&term["labelSelector"], labels));
    assert_eq!(s(&term["topologyKey"]), "kubernetes.io/hostname");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(grace >= 30, "controlled shutdown needs time: {grace}s");

    // Environment: keeld's keys only (and the entrypoint's), no fixed node id (the ordinal
    // gives it), voters = one per pod at its stable name, ids from the ordinals.
    let sts_name = s(&sts["metadata"]["name"]);
    let env = container_env(c, "prod");
    let names = config_env_names();
    for (k, _) in &env {
        let ours = k.starts_with("KEEL_");
        assert!(
            !ours || names.contains(k) || ENTRYPOINT_ONLY.contains(&k.as_str()),
            "{k} is not a keeld key"
        );
        assert_ne!(
            k, "KEEL_NODE_ID",
            "the node id must come from the pod ordinal"
        );
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let voters: Voters = get("KEEL_CONTROLLER_VOTERS")
        .expect("voters")
        .parse()
        .unwrap();
    let domain = get("KEEL_HOST_DOMAIN").expect("host domain");
    assert_eq!(voters.0.len() as u64, replicas);
    for (id, addr) in &voters.0 {
        let pod_name = format!("{sts_name}-{}", id - 1);
        let internal = defaults.internal_listen.port();
        assert_eq!(addr, &format!("{pod_name}.{domain}:{internal}"));
    }
    let headless_name = s(&headless["metadata"]["name"]);
    assert_eq!(domain, format!("{headless_name}.prod.svc.cluster.local"));

    // Each pod's environment through the entrypoint into keeld.
    for ordinal in 0..replicas {
        let host = format!("{sts_name}-{ordinal}");
        let printed = entrypoint_print_config(&host, &env);
        assert_node(&printed, ordinal + 1, &format!("{host}.{domain}"));
    }
}

/// Runs `deploy/docker-entrypoint.sh --print-config` as in a container named `host`: the
/// image's environment, then `env`, a stand-in `hostname`, and the real keeld. Returns what
/// keeld printed; panics if it refused the config.
fn entrypoint_print_config(host: &str, env: &[(String, String)]) -> String {
    let bin = tempfile::tempdir().expect("tempdir");
    let stub = |name: &str, body: &str| {
        let path = bin.path().join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    };
    stub("hostname", &format!("echo {host}"));
    stub("keeld", &format!("exec {} \"$@\"", keeld_path().display()));
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let out = Command::new("bash")
        .arg(repo().join("deploy/docker-entrypoint.sh"))
        .arg("--print-config")
        .env_clear()
        .env("PATH", path)
        .envs(dockerfile_env())
        .envs(env.iter().cloned())
        .output()
        .expect("run the entrypoint");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{host}: keeld refused the config: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `--print-config` shows node `id` from the environment, advertising `host`.
fn assert_node(printed: &str, id: u64, host: &str) {
    let line = |key: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in\n{printed}"))
            .to_owned()
    };
    let node = line("node_id");
    assert!(node.starts_with(&format!("node_id = {id} ")), "{node}");
    assert!(node.ends_with("# environment"), "{node}");
    let advertised = line("advertised_host");
    assert!(advertised.contains(&format!("\"{host}\"")), "{advertised}");
}

#[test]
fn the_compose_file_agrees_with_keeld() {
    let docs = documents("deploy/docker-compose.yml");
    assert_eq!(docs.len(), 1);
    let compose = &docs[0];
    let services = compose["services"].as_mapping().expect("services");
    assert_eq!(services.len(), 3);
    let defaults = Config::default();
    let names = config_env_names();
    let data_dir = dockerfile_env()["KEEL_DATA_DIR"].clone();
    let mut hosts = Vec::new();
    for (name, svc) in services {
        let name = s(name);
        let host = s(&svc["hostname"]).to_owned();
        hosts.push(host.clone());
        let env: Vec<(String, String)> = svc["environment"]
            .as_mapping()
            .expect("environment map")
            .iter()
            .map(|(k, v)| (s(k).to_owned(), s(v).to_owned()))
            .collect();
        for (k, _) in &env {
            assert!(names.contains(k), "{name}: {k} is not a keeld key");
        }
        // Published ports point at the client and HTTP listeners.
        let inside: Vec<u16> = svc["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| port_of(s(p)))
            .collect();
        assert_eq!(
            inside,
            vec![defaults.listen.port(), defaults.http_listen.port()]
        );
        let volumes = svc["volumes"].as_sequence().expect("volumes");
        let (volume, mount) = s(&volumes[0]).split_once(':').expect("volume:path");
        assert_eq!(mount, data_dir, "{name}");
        assert!(
            compose["volumes"].get(volume).is_some(),
            "{volume} is not a named volume"
        );
        assert!(
            svc["stop_grace_period"].is_string(),
            "{name}: no grace period"
        );
        let voters: Voters = env
            .iter()
            .find(|(k, _)| k == "KEEL_CONTROLLER_VOTERS")
            .map(|(_, v)| v.parse().unwrap())
            .expect("voters");
        let ordinal: u64 = host.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(
            voters.0.get(&(ordinal as u32 + 1)),
            Some(&format!("{host}:{}", defaults.internal_listen.port()))
        );
        let printed = entrypoint_print_config(&host, &env);
        assert_node(&printed, ordinal + 1, &host);
    }
    hosts.sort();
    assert_eq!(hosts, vec!["keel-0", "keel-1", "keel-2"]);
}
