//! The status page in a real browser (headless Chromium over WebDriver): `atrest status
//! --web` against a store with a known mix of objects, and `/ui/` of `atrest serve`.
//! Screenshots at 1280x800 and 390x844 are kept under the target directory
//! (`<target>/tmp/status-page/`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atrest_store::{CompactionPolicy, StoreConfig};
use atrest_testkit::browser::{http, Browser};
use atrest_testkit::{free_port, AtrestServer, Kubectl};
use common::*;
use serde_json::{json, Value};

/// Values that must never reach the page: object data and key material.
const CANARY: &str = "page-canary-7f3a1c";

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The final configuration: secrets on secretbox `new`, aesgcm `old` still readable,
/// identity last; configmaps not covered.
fn final_config() -> String {
    config(
        "secrets",
        &[
            provider("secretbox", "new", K_SB),
            provider("aesgcm", "old", K_OLD),
        ],
    )
}

/// Secrets: 4 on the write key, 3 on the old key (stale), 2 plaintext, 1 on a key the
/// configuration no longer has (undecryptable); configmaps: 2, not covered.
fn seed_mix(data_dir: &Path) {
    let store = StoreConfig::Embedded {
        data_dir: data_dir.to_path_buf(),
        compaction: CompactionPolicy::disabled(),
    };
    let payload = |i: usize| format!("{CANARY}-{i}").into_bytes();
    let objects = |range: std::ops::Range<usize>, name: &str| -> Vec<_> {
        range
            .map(|i| {
                let n = format!("{name}-{i}");
                (
                    secrets(),
                    "default",
                    n.clone(),
                    secret_bytes("default", &n, &payload(i)),
                )
            })
            .collect()
    };
    seed(
        &store,
        "/registry",
        &final_config(),
        &objects(0..4, "current"),
    );
    seed(
        &store,
        "/registry",
        &config("secrets", &[provider("aesgcm", "old", K_OLD)]),
        &objects(4..7, "stale"),
    );
    seed(
        &store,
        "/registry",
        &identity_only("secrets"),
        &objects(7..9, "plain"),
    );
    seed(
        &store,
        "/registry",
        &config("secrets", &[provider("aesgcm", "gone", K_GONE)]),
        &objects(9..10, "lost"),
    );
    let maps: Vec<_> = (0..2)
        .map(|i| {
            let n = format!("map-{i}");
            (
                configmaps(),
                "default",
                n.clone(),
                secret_bytes("default", &n, &payload(100 + i)),
            )
        })
        .collect();
    seed(&store, "/registry", &identity_only("configmaps"), &maps);
}

struct WebStatus {
    child: Child,
    addr: String,
    login: String,
}

impl Drop for WebStatus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_web(data_dir: &Path, config: &Path) -> WebStatus {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(atrest_bin())
        .args(["status", "--web", "--listen", &addr, "--data-dir"])
        .arg(data_dir)
        .arg("--encryption-provider-config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let login = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no login link in {line:?}"))
        .to_string();
    assert!(login.contains("/login?token="), "{login}");
    WebStatus { child, addr, login }
}

fn count(browser: &Browser, selector: &str) -> Option<u64> {
    browser.text(selector).and_then(|t| t.trim().parse().ok())
}

fn secrets_counts(browser: &Browser) -> [Option<u64>; 5] {
    ["objects", "current", "stale", "plaintext", "undecryptable"].map(|c| {
        count(
            browser,
            &format!("li[data-resource=\"secrets\"] [data-count=\"{c}\"]"),
        )
    })
}

/// Nothing secret in `text`: no object payload, no key (base64 or raw bytes as hex).
fn assert_no_secrets(what: &str, text: &str) {
    use base64::Engine as _;
    assert!(!text.contains(CANARY), "{what} shows object data");
    let b64 = base64::engine::general_purpose::STANDARD;
    for key in [K_SB, K_OLD, K_GONE] {
        assert!(!text.contains(key), "{what} shows a key");
        let raw = b64.decode(key).unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex), "{what} shows a key as hex");
        assert!(
            !text.contains(&b64.encode(&raw[..16])),
            "{what} shows part of a key"
        );
    }
    // The payloads are stored inside base64 `data` fields: their encoding must not show either.
    let encoded = b64.encode(format!("{CANARY}-1"));
    assert!(
        !text.contains(&encoded[..16]),
        "{what} shows encoded object data"
    );
}

#[test]
fn status_web_shows_the_mix_in_a_browser_and_follows_a_reencrypt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    seed_mix(&data);
    let config_file = write(dir.path(), "config.yaml", &final_config());
    let web = start_web(&data, &config_file);
    let token_path = web.login.split_once(&web.addr).unwrap().1.to_string();

    // Nothing without the token or a session: not the page, its assets, nor its JSON.
    for path in ["/", "/api/status", "/app.js", "/login", "/login?token=00ff"] {
        let (status, _, body) = http(&web.addr, "GET", path, &[], b"");
        assert_eq!(status, 401, "GET {path} without a session");
        assert!(!String::from_utf8_lossy(&body).contains("secrets"));
    }
    let (status, _, _) = http(
        &web.addr,
        "GET",
        "/api/status",
        &[("Cookie", "atrest_ui_session=deadbeef")],
        b"",
    );
    assert_eq!(status, 401, "a made-up session cookie");

    let browser = Browser::start(1280, 800, &[]);
    browser.goto(&web.login);
    browser.wait_until("the first scan", Duration::from_secs(60), |b| {
        count(b, "li[data-resource=\"secrets\"] [data-count=\"objects\"]").is_some()
    });
    // The link is spent, and the address bar no longer holds it.
    let (status, _, _) = http(&web.addr, "GET", &token_path, &[], b"");
    assert_eq!(status, 401, "a login link works once");
    let location = browser.eval("return location.pathname + location.search;", json!([]));
    assert_eq!(location, "/");

    // The exact mix.
    assert_eq!(
        secrets_counts(&browser),
        [Some(10), Some(4), Some(3), Some(2), Some(1)]
    );
    assert_eq!(
        browser.text("#summary").unwrap(),
        "Not up to date: secrets (3 stale, 2 plaintext, 1 undecryptable)."
    );
    assert_eq!(
        browser.eval(
            "return document.querySelector('#summary').dataset.state;",
            json!([])
        ),
        "not-up-to-date"
    );
    assert_eq!(
        browser
            .text("li[data-resource=\"secrets\"] [data-write-key]")
            .unwrap(),
        "secretbox:new"
    );
    assert_eq!(
        count(
            &browser,
            "#uncovered li[data-resource=\"configmaps\"] [data-count=\"objects\"]"
        ),
        Some(2)
    );
    assert_eq!(
        count(
            &browser,
            "tr[data-key=\"0:secretbox:new\"] [data-count=\"objects\"]"
        ),
        Some(4)
    );
    assert_eq!(
        count(
            &browser,
            "tr[data-key=\"0:aesgcm:old\"] [data-count=\"objects\"]"
        ),
        Some(3)
    );
    assert_eq!(
        count(
            &browser,
            "tr[data-key=\"0:identity:\"] [data-count=\"objects\"]"
        ),
        Some(2)
    );
    // Colour is not the only signal: the bar says what it shows in words.
    let label = browser.eval(
        "return document.querySelector('li[data-resource=\"secrets\"] .bar').getAttribute('aria-label');",
        json!([]),
    );
    assert_eq!(
        label,
        "secrets: 4 on the write key, 3 stale (older key), 2 plaintext, 1 undecryptable"
    );
    // The retained history holds the plaintext versions.
    assert_eq!(
        browser.eval(
            "return document.querySelector('#history').dataset.clean;",
            json!([])
        ),
        "false"
    );
    assert_eq!(
        browser.eval(
            "return document.querySelector('#rotation').dataset.step;",
            json!([])
        ),
        "none"
    );

    // Screenshots at both sizes; the narrow one has no horizontal scrolling of the page.
    let shots = artifacts();
    browser.screenshot(&shots.join("status-web-1280x800.png"));
    browser.resize(390, 844);
    browser.wait_until("the narrow layout", Duration::from_secs(10), |b| {
        b.eval("return window.innerWidth;", json!([])).as_u64() == Some(390)
    });
    let overflow = browser.eval(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        json!([]),
    );
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than a phone: {overflow}"
    );
    browser.screenshot(&shots.join("status-web-390x844.png"));
    browser.resize(1280, 800);

    // The session cookie: HttpOnly, SameSite=Strict; the JSON it opens holds no secret.
    let cookies = browser.cookies();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "atrest_ui_session")
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert_eq!(
        browser.eval("return document.cookie;", json!([])),
        "",
        "scripts cannot read the session"
    );
    let cookie = format!("atrest_ui_session={}", session["value"].as_str().unwrap());
    let (status, head, body) = http(&web.addr, "GET", "/api/status", &[("Cookie", &cookie)], b"");
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("cache-control: no-store"));
    assert!(head.contains("default-src 'none'"));
    let json_text = String::from_utf8(body).unwrap();
    assert_no_secrets("the page's JSON", &json_text);
    assert_no_secrets("the page", &browser.html());

    // Many viewers at once share one scan.
    let scans: HashSet<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let (_, _, body) =
                        http(&web.addr, "GET", "/api/status", &[("Cookie", &cookie)], b"");
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    v["scan"].as_u64().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        scans.len() <= 2,
        "16 concurrent viewers caused scans {scans:?}"
    );

    // Rewrite what can be rewritten; the page follows by itself.
    let out = atrest(&[
        "reencrypt",
        "--data-dir",
        data.to_str().unwrap(),
        "--encryption-provider-config",
        config_file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 3, "the undecryptable object remains");
    browser.wait_until(
        "the page to show the re-encryption",
        Duration::from_secs(60),
        |b| secrets_counts(b) == [Some(10), Some(9), Some(0), Some(0), Some(1)],
    );
    assert_eq!(
        count(
            &browser,
            "tr[data-key=\"0:aesgcm:old\"] [data-count=\"objects\"]"
        ),
        Some(0)
    );
    assert!(browser
        .text("tr[data-key=\"0:aesgcm:old\"]")
        .unwrap()
        .contains("safe to remove"));
    browser.screenshot(&shots.join("status-web-after-reencrypt-1280x800.png"));
    assert_no_secrets("the page after the reencrypt", &browser.html());
}

/// `curl` against the HTTPS server (its CA is in the data dir).
fn curl(server: &AtrestServer, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(server.data_dir.join("pki/ca.crt"))
        .args(["-D", "-", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = text.rsplit_once('\n').unwrap();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    (
        code.trim().parse().unwrap(),
        head.to_string(),
        body.to_string(),
    )
}

#[test]
fn serve_shows_the_page_under_ui_after_a_one_time_login() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = write(
        dir.path(),
        "config.yaml",
        &config("secrets", &[provider("secretbox", "key1", K_SB)]),
    );
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &[
            "--encryption-provider-config",
            cfg.to_str().unwrap(),
            "--encryption-provider-config-automatic-reload",
            "--encryption-provider-config-reload-interval",
            "1",
        ],
    );
    let kubectl = Kubectl::new(&data.join("admin.kubeconfig"), &dir.path().join("cache"));
    for i in 0..3 {
        kubectl.ok(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=v={CANARY}"),
        ]);
    }
    let base = format!("https://127.0.0.1:{}", server.port);

    // The printed link of the start and the ones `ui-url` mints all work once.
    let log = std::fs::read_to_string(&server.log).unwrap();
    let printed = log
        .lines()
        .find_map(|l| l.split("status page (one-time link): ").nth(1))
        .unwrap_or_else(|| panic!("no login link in the log:\n{log}"))
        .trim()
        .to_string();
    assert!(
        printed.starts_with(&format!("{base}/ui/login?token=")),
        "{printed}"
    );
    let minted = atrest(&["ui-url", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(
        code(&minted),
        0,
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let minted = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    assert!(
        minted.starts_with(&format!("{base}/ui/login?token=")),
        "{minted}"
    );
    assert_ne!(minted, printed);

    // Without a session: 401 everywhere under /ui/, even with kubectl's admin token.
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    for path in ["/ui/", "/ui/api/status", "/ui/app.js"] {
        let (code, _, _) = curl(&server, &[&format!("{base}{path}")]);
        assert_eq!(code, 401, "{path}");
        let (code, _, _) = curl(&server, &["-H", &bearer, &format!("{base}{path}")]);
        assert_eq!(code, 401, "{path} with a bearer token");
    }

    // Login: a Secure, HttpOnly, SameSite=Strict cookie for /ui/, and the link is spent.
    let (code, head, _) = curl(&server, &[&minted]);
    assert_eq!(code, 303, "{head}");
    let set_cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie:\n{head}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/ui/"] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    let (code, _, _) = curl(&server, &[&minted]);
    assert_eq!(code, 401, "a spent link");
    let cookie = set_cookie
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let (code, _, body) = curl(&server, &["-b", &cookie, &format!("{base}/ui/api/status")]);
    assert_eq!(code, 200);
    let snapshot: Value = serde_json::from_str(&body).unwrap();
    let secrets = resource(&snapshot["audit"], "secrets");
    assert_eq!(counts(secrets), [3, 3, 0, 0, 0]);
    assert_eq!(snapshot["audit"]["servers"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot["audit"]["servers"][0]["matchesConfig"], true);
    assert!(!body.contains(CANARY));

    // The browser, on the printed link.
    let browser = Browser::start(1280, 800, &["--ignore-certificate-errors"]);
    browser.goto(&printed);
    browser.wait_until("the page under /ui/", Duration::from_secs(60), |b| {
        count(b, "li[data-resource=\"secrets\"] [data-count=\"current\"]") == Some(3)
    });
    assert_eq!(
        browser.eval(
            "return document.querySelector('#summary').dataset.state;",
            json!([])
        ),
        "up-to-date"
    );
    assert_eq!(
        browser.eval(
            "return document.querySelectorAll('#servers tbody tr[data-matches=\"true\"]').length;",
            json!([])
        ),
        1
    );
    browser.screenshot(&artifacts().join("serve-ui-1280x800.png"));
    assert!(!browser.html().contains(CANARY));

    // A rotation, converged through the server's heartbeat; the page shows where it got.
    let out = atrest(&[
        "rotate",
        "-o",
        "json",
        "--data-dir",
        data.to_str().unwrap(),
        "--encryption-provider-config",
        cfg.to_str().unwrap(),
        "--timeout",
        "60s",
        "--poll",
        "300ms",
    ]);
    assert_eq!(
        common::code(&out),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    browser.wait_until("the finished rotation", Duration::from_secs(60), |b| {
        b.eval(
            "return document.querySelector('#rotation').dataset.step;",
            json!([]),
        ) == "done"
    });
    assert_eq!(count(&browser, "[data-rotation-done]"), Some(3));
    assert_eq!(count(&browser, "[data-rotation-total]"), Some(3));
    assert_eq!(
        count(
            &browser,
            "li[data-resource=\"secrets\"] [data-count=\"current\"]"
        ),
        Some(3)
    );
    let write_key = browser
        .text("li[data-resource=\"secrets\"] [data-write-key]")
        .unwrap();
    assert!(
        write_key.starts_with("secretbox:") && write_key != "secretbox:key1",
        "the new key writes: {write_key}"
    );
    assert_eq!(
        count(
            &browser,
            "tr[data-key=\"0:secretbox:key1\"] [data-count=\"objects\"]"
        ),
        None,
        "the old key is gone from the configuration"
    );
    browser.screenshot(&artifacts().join("serve-ui-rotated-1280x800.png"));
    let html = browser.html();
    assert!(!html.contains(CANARY));
    let rotated = std::fs::read_to_string(&cfg).unwrap();
    for line in rotated.lines().filter(|l| l.contains("secret:")) {
        let key = line.split("secret:").nth(1).unwrap().trim();
        assert!(!html.contains(key), "the page shows the new key");
    }
}

/// `atrest kms-plugin` with a key file made on first start.
fn start_plugin(dir: &Path, socket: &Path) -> Child {
    let child = Command::new(atrest_bin())
        .arg("kms-plugin")
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .arg("--create-key")
        .arg("--kek-file")
        .arg(dir.join("kek"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn the_page_shows_kms_plugin_health_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let socket = dir.path().join("kms.sock");
    let mut plugin = start_plugin(dir.path(), &socket);
    let yaml = atrest(&[
        "config",
        "init",
        "--provider",
        "kms",
        "--kms-name",
        "page-kms",
        "--kms-endpoint",
        &format!("unix://{}", socket.display()),
    ]);
    assert_eq!(code(&yaml), 0, "{}", String::from_utf8_lossy(&yaml.stderr));
    let cfg = write(
        dir.path(),
        "enc.yaml",
        &String::from_utf8(yaml.stdout).unwrap(),
    );
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &["--encryption-provider-config", cfg.to_str().unwrap()],
    );
    let kubectl = Kubectl::new(&data.join("admin.kubeconfig"), &dir.path().join("cache"));
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "k",
        &format!("--from-literal=v={CANARY}"),
    ]);
    let link = atrest(&["ui-url", "--data-dir", data.to_str().unwrap()]);
    let link = String::from_utf8(link.stdout).unwrap().trim().to_string();

    let browser = Browser::start(1280, 800, &["--ignore-certificate-errors"]);
    browser.goto(&link);
    let health = |b: &Browser| b.text("#kms tr[data-kms=\"page-kms\"]").unwrap_or_default();
    browser.wait_until("the plugin healthy", Duration::from_secs(60), |b| {
        health(b).contains("healthy")
    });
    assert!(health(&browser).contains(&format!("unix://{}", socket.display())));
    assert_eq!(
        browser
            .text("li[data-resource=\"secrets\"] [data-write-key]")
            .unwrap(),
        "kms:page-kms"
    );

    // The plugin goes away: the page says so, in words and in red.
    plugin.kill().unwrap();
    plugin.wait().unwrap();
    let _ = std::fs::remove_file(&socket);
    browser.wait_until("the plugin failing", Duration::from_secs(90), |b| {
        health(b).contains("failing")
    });
    assert_eq!(
        browser.eval(
            "return document.querySelector('#kms tr[data-kms=\"page-kms\"] td.bad') !== null;",
            json!([])
        ),
        true
    );
    browser.screenshot(&artifacts().join("serve-ui-kms-outage-1280x800.png"));

    // It comes back (same key file): healthy again, nothing to do.
    let mut plugin = start_plugin(dir.path(), &socket);
    browser.wait_until("the plugin healthy again", Duration::from_secs(90), |b| {
        let h = health(b);
        h.contains("healthy") && !h.contains("failing")
    });
    assert!(!browser.html().contains(CANARY));
    drop(server);
    let _ = plugin.kill();
    let _ = plugin.wait();
}
