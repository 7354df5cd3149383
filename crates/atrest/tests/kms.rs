//! KMS v2 end to end with real processes: `atrest kms-plugin` on a unix socket in a temp
//! directory, `atrest serve` using it, the real kubectl, the offline commands reaching the
//! plugin through the configuration's endpoint, and the real kube-apiserver using atrest's
//! plugin.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use atrest_encryption::EncryptedObject;
use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::upstream::KubeApiServer;
use atrest_testkit::{embedded_get, etcdctl_get, AtrestServer, Kubectl};
use common::{atrest_bin, write};
use prost::Message;

/// A running `atrest kms-plugin`.
struct Plugin {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Plugin {
    fn start(dir: &Path, socket: &Path, kek_files: &[&Path]) -> Plugin {
        let log = dir.join(format!(
            "plugin-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(atrest_bin());
        cmd.arg("kms-plugin")
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .arg("--create-key");
        for f in kek_files {
            cmd.arg("--kek-file").arg(f);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let plugin = Plugin {
            child: Some(child),
            socket: socket.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "the plugin did not listen:\n{}",
                std::fs::read_to_string(&plugin.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        plugin
    }

    /// SIGTERM and wait: the plugin removes its socket.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "kms-plugin exit {status}:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        assert!(!self.socket.exists(), "the socket is removed on SIGTERM");
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn atrest(args: &[&str]) -> Output {
    Command::new(atrest_bin()).args(args).output().unwrap()
}

fn atrest_ok(args: &[&str]) -> String {
    let out = atrest(args);
    assert!(
        out.status.success(),
        "atrest {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `k8s:enc:kms:v2:<name>:` + a valid upstream `EncryptedObject`.
fn parse_value(stored: &[u8], name: &str) -> EncryptedObject {
    let prefix = format!("k8s:enc:kms:v2:{name}:");
    let payload = stored.strip_prefix(prefix.as_bytes()).unwrap_or_else(|| {
        panic!(
            "not a KMS v2 value of {name}: {:?}",
            &stored[..20.min(stored.len())]
        )
    });
    let object = EncryptedObject::decode(payload).unwrap();
    object.validate().unwrap();
    assert_eq!(object.encrypted_dek_source_type, 1);
    object
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn raw_ok(k: &Kubectl, path: &str) -> bool {
    k.run(&["get", "--raw", path]).status.success()
}

fn kms_config(dir: &Path, name: &str, socket: &Path) -> PathBuf {
    let yaml = atrest_ok(&[
        "config",
        "init",
        "--provider",
        "kms",
        "--kms-name",
        name,
        "--kms-endpoint",
        &format!("unix://{}", socket.display()),
    ]);
    write(dir, "enc.yaml", &yaml)
}

#[test]
fn kms_plugin_with_serve_outage_recovery_rotation_and_reencrypt() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let k1 = dir.path().join("kek1");
    let k2 = dir.path().join("kek2");
    let data = dir.path().join("data");
    let plugin = Plugin::start(dir.path(), &socket, &[&k1]);
    let cfg = kms_config(dir.path(), "e2e", &socket);
    let cfg_s = cfg.to_str().unwrap();
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &[
            "--encryption-provider-config",
            cfg_s,
            "--kms-write-state-ttl-seconds",
            "2",
            "--kms-status-poll-seconds",
            "1",
            "--kms-unhealthy-poll-seconds",
            "1",
        ],
    );
    let k = server.kubectl();
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=pw=first",
    ]);
    let stored = embedded_get(&data, "/registry/secrets/default/s1").unwrap();
    let first = parse_value(&stored, "e2e");
    assert!(first.key_id.starts_with("kek-"));
    assert!(!atrest_testkit::contains(&stored, b"first"));
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.pw}"]),
        "Zmlyc3Q="
    );

    // Outage: reads keep working (past the write TTL), writes fail clearly, readyz says so,
    // livez does not.
    plugin.stop();
    wait_for(
        "readyz to report the plugin",
        Duration::from_secs(60),
        || !raw_ok(&k, "/readyz"),
    );
    assert!(raw_ok(&k, "/livez"), "livez never depends on the plugin");
    assert!(!raw_ok(&k, "/healthz/kms-providers"));
    assert!(raw_ok(&k, "/readyz?exclude=kms-providers"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.pw}"]),
        "Zmlyc3Q=",
        "reads never expire"
    );
    let mut refused = String::new();
    wait_for("writes to be refused", Duration::from_secs(60), || {
        let out = k.run(&["create", "secret", "generic", "s2", "--from-literal=pw=x"]);
        refused = String::from_utf8_lossy(&out.stderr).into_owned();
        !out.status.success()
    });
    assert!(refused.contains("Internal error"), "{refused}");
    assert!(refused.contains("\"e2e\""), "names the provider: {refused}");
    assert!(refused.contains("writes are refused"), "{refused}");
    assert!(
        refused.contains(socket.to_str().unwrap()),
        "names the endpoint: {refused}"
    );

    // Recovery is automatic.
    let plugin = Plugin::start(dir.path(), &socket, &[&k1]);
    wait_for("writes to work again", Duration::from_secs(60), || {
        k.run(&[
            "create",
            "secret",
            "generic",
            "s2",
            "--from-literal=pw=second",
        ])
        .status
        .success()
    });
    wait_for("readyz to recover", Duration::from_secs(60), || {
        raw_ok(&k, "/readyz")
    });
    let metrics = k.ok(&["get", "--raw", "/metrics"]);
    for name in [
        "apiserver_envelope_encryption_key_id_hash_total",
        "apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds",
        "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds",
        "apiserver_envelope_encryption_dek_source_cache_size",
        "apiserver_envelope_encryption_kms_operations_latency_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains("method_name=\"/v2.KeyManagementService/Status\""));

    // KEK rotation in the plugin: a new first key; new writes use its key id.
    plugin.stop();
    let plugin = Plugin::start(dir.path(), &socket, &[&k2, &k1]);
    let mut i = 0;
    let mut new_id = String::new();
    wait_for(
        "writes under the new key id",
        Duration::from_secs(60),
        || {
            i += 1;
            let name = format!("r{i}");
            if !k
                .run(&["create", "secret", "generic", &name, "--from-literal=pw=r"])
                .status
                .success()
            {
                return false;
            }
            let stored = embedded_get(&data, &format!("/registry/secrets/default/{name}")).unwrap();
            new_id = parse_value(&stored, "e2e").key_id;
            new_id != first.key_id
        },
    );

    // Offline commands reach the plugin through the configuration's endpoint.
    let data_s = data.to_str().unwrap();
    let status = atrest(&[
        "status",
        "--data-dir",
        data_s,
        "--encryption-provider-config",
        cfg_s,
    ]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&first.key_id), "{text}");
    assert!(text.contains(&new_id), "{text}");
    assert!(
        !status.status.success(),
        "old-key objects are stale: {text}"
    );
    let got = atrest_ok(&[
        "get",
        "--data-dir",
        data_s,
        "--encryption-provider-config",
        cfg_s,
        "/registry/secrets/default/s1",
    ]);
    assert!(got.contains("stale: true"), "{got}");
    assert!(got.contains("Zmlyc3Q="), "{got}");
    atrest_ok(&[
        "reencrypt",
        "--data-dir",
        data_s,
        "--encryption-provider-config",
        cfg_s,
    ]);
    let status = atrest(&[
        "status",
        "--data-dir",
        data_s,
        "--encryption-provider-config",
        cfg_s,
    ]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(!text.contains(&first.key_id), "{text}");
    let stored = embedded_get(&data, "/registry/secrets/default/s1").unwrap();
    assert_eq!(parse_value(&stored, "e2e").key_id, new_id);
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.pw}"]),
        "Zmlyc3Q="
    );
    server.stop();
    plugin.stop();
}

#[test]
fn kube_apiserver_uses_atrest_kms_plugin_and_both_read_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let kek = dir.path().join("kek");
    let plugin = Plugin::start(dir.path(), &socket, &[&kek]);
    let cfg = kms_config(dir.path(), "shared", &socket);
    let cfg_s = cfg.to_str().unwrap();
    let cluster = EtcdCluster::single();
    let etcd = cluster.endpoints()[0].clone();
    let Some(mut kas) = KubeApiServer::start(&etcd, &cfg, &[]) else {
        return;
    };
    let kk = kas.kubectl();
    let version = kk.ok(&["get", "--raw", "/version"]);
    assert!(version.contains("\"minor\": \"36\""), "{version}");
    kk.ok(&[
        "create",
        "secret",
        "generic",
        "from-kas",
        "--from-literal=pw=upstream",
    ]);
    let stored = etcdctl_get(&cluster.endpoints(), "/registry/secrets/default/from-kas").unwrap();
    parse_value(&stored, "shared");
    assert!(!atrest_testkit::contains(&stored, b"upstream"));

    // atrest reads what kube-apiserver wrote, offline and as a server, and writes for it.
    let got = atrest_ok(&[
        "get",
        "--etcd-servers",
        &etcd,
        "--encryption-provider-config",
        cfg_s,
        "/registry/secrets/default/from-kas",
    ]);
    assert!(got.contains("provider: kms:shared"), "{got}");
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--etcd-servers",
            &etcd,
            "--encryption-provider-config",
            cfg_s,
        ],
    );
    let ka = server.kubectl();
    assert_eq!(
        ka.ok(&["get", "secret", "from-kas", "-o", "jsonpath={.data.pw}"]),
        "dXBzdHJlYW0="
    );
    ka.ok(&[
        "create",
        "secret",
        "generic",
        "from-atrest",
        "--from-literal=pw=ours",
    ]);
    let stored = etcdctl_get(
        &cluster.endpoints(),
        "/registry/secrets/default/from-atrest",
    )
    .unwrap();
    parse_value(&stored, "shared");
    assert_eq!(
        kk.ok(&["get", "secret", "from-atrest", "-o", "jsonpath={.data.pw}"]),
        "b3Vycw=="
    );
    server.stop();
    kas.stop();
    drop(cluster);
    plugin.stop();
}

#[test]
fn kms_plugin_on_a_softhsm_token_serves_encrypt_and_decrypt() {
    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    if !Path::new(MODULE).exists() {
        eprintln!("note: SoftHSM is not installed (scripts/install-deps.sh); skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = write(
        dir.path(),
        "softhsm2.conf",
        &format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    );
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "kms",
            "--pin",
            "1234",
            "--so-pin",
            "12345678",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let socket = dir.path().join("hsm.sock");
    let log = std::fs::File::create(dir.path().join("plugin.log")).unwrap();
    let mut child = Command::new(atrest_bin())
        .arg("kms-plugin")
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .args([
            "--pkcs11-module",
            MODULE,
            "--token-label",
            "kms",
            "--key-label",
            "kek",
        ])
        .args(["--pin-env", "KMS_PIN", "--create-key"])
        .env("SOFTHSM2_CONF", &conf)
        .env("KMS_PIN", "1234")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(
        "the PKCS#11 plugin to listen",
        Duration::from_secs(20),
        || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
    );
    let cfg = kms_config(dir.path(), "hsm", &socket);
    let cfg_s = cfg.to_str().unwrap();
    let key = "/registry/secrets/default/hsm";
    let sealed = atrest_testkit::run_with_input(
        Command::new(atrest_bin()).args([
            "encrypt",
            "--encryption-provider-config",
            cfg_s,
            "--key",
            key,
        ]),
        b"sealed by the token",
    );
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let object = parse_value(&sealed.stdout, "hsm");
    assert!(object.key_id.starts_with("p11-"));
    let opened = atrest_testkit::run_with_input(
        Command::new(atrest_bin()).args([
            "decrypt",
            "--encryption-provider-config",
            cfg_s,
            "--key",
            key,
        ]),
        &sealed.stdout,
    );
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert_eq!(opened.stdout, b"sealed by the token");
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists());
    let text = std::fs::read_to_string(dir.path().join("plugin.log")).unwrap();
    assert!(!text.contains("1234"), "the PIN is never logged");
}

#[test]
fn kms_plugin_help_explains_both_backends() {
    let help = atrest_ok(&["kms-plugin", "--help"]);
    for flag in [
        "--listen",
        "--kek-file",
        "--pkcs11-module",
        "--token-label",
        "--key-label",
        "--pin-env",
        "--create-key",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let out = atrest(&[
        "kms-plugin",
        "--listen",
        "tcp://127.0.0.1:1",
        "--kek-file",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only unix sockets"));
}
