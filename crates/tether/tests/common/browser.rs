//! A headless Chromium driven over WebDriver (chromedriver), for the web UI's tests.
//!
//! A small client of the W3C WebDriver protocol over the tests' own HTTP client: a session,
//! navigation, scripts run in the page, clicks and typing on real elements, screenshots, and
//! Chrome DevTools commands (to emulate a dark system theme, to read the page's metrics).
//! Without `chromium` and `chromedriver` on the PATH the tests say they were skipped, unless
//! `TETHER_REQUIRE_BROWSER` is set (CI sets it), which makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::http::HttpClient;

pub const REQUIRE_BROWSER: &str = "TETHER_REQUIRE_BROWSER";

/// How long a condition may take to hold in the page. Generous: debug builds, two busy cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The browser and its driver, or `None` after saying the test was skipped.
pub fn find(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = on_path(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            assert!(
                std::env::var_os(REQUIRE_BROWSER).is_none(),
                "{test}: {REQUIRE_BROWSER} is set, so browser tests must run, but chromium or \
                 chromedriver is not on the PATH (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: {test} (chromium and chromedriver are not both on the PATH)");
            None
        }
    }
}

/// A chromedriver process with one browser session. Dropping it kills the driver, which
/// takes its browser with it.
pub struct Browser {
    http: HttpClient,
    driver_url: String,
    session: String,
    _driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a window of
    /// `width` x `height`.
    pub async fn start(test: &str, width: u32, height: u32) -> Option<Browser> {
        let (chromium, driver) = find(test)?;
        let port = super::server::free_loopback_addr()
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .expect("a port");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = HttpClient::new();
        let driver_url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = http
                .send(Method::GET, &format!("{driver_url}/status"), &[], "")
                .await
                .ok()
                .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"), "--enable-precise-memory-info",
                    "--no-first-run", "--disable-extensions"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            http,
            driver_url,
            session: String::new(),
            _driver: child,
        };
        let created = browser.call(Method::POST, "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_string();
        Some(browser)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.driver_url)
        } else {
            format!("{}/session/{}{path}", self.driver_url, self.session)
        };
        let body = body.unwrap_or(json!({})).to_string();
        let headers: &[(&str, &str)] = if method == Method::GET {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        let response = self
            .http
            .send(method, &url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let value: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}: {}", response.body_text()));
        assert!(
            response.status.is_success(),
            "webdriver {path}: {} {value}",
            response.status
        );
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null` or `false`, which it
    /// returns; fails after [`DEADLINE`] saying what it waited for.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(script, args.clone()).await;
            if !(value.is_null() || value == false) {
                return value;
            }
            if started.elapsed() > DEADLINE {
                let logs = self.console().await;
                panic!("waited {DEADLINE:?} for {what}; the page's console: {logs:#?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The text of the `data-live-state` element, once it is `state`.
    pub async fn wait_live_state(&self, state: &str) {
        self.wait_for(
            &format!("the live state {state:?}"),
            "const el = document.querySelector('[data-live-state]'); \
             return el && el.textContent === arguments[0];",
            json!([state]),
        )
        .await;
    }

    /// The offsets of the rendered events, in page order.
    pub async fn offsets(&self) -> Vec<String> {
        let value = self
            .eval(
                "return [...document.querySelectorAll('[data-offset]')].map(e => e.dataset.offset);",
                json!([]),
            )
            .await;
        serde_json::from_value(value).expect("a list of offsets")
    }

    async fn element(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .http
                .send(
                    Method::POST,
                    &format!("{}/session/{}/element", self.driver_url, self.session),
                    &[("Content-Type", "application/json")],
                    json!({"using": "css selector", "value": css}).to_string(),
                )
                .await
                .ok()
                .filter(|r| r.status.is_success())
                .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
            if let Some(found) = found {
                if let Some(Value::String(id)) = found["value"]
                    .as_object()
                    .and_then(|o| o.values().next().cloned())
                {
                    return id;
                }
            }
            assert!(started.elapsed() < DEADLINE, "no element matches {css}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Clicks the element `css` finds, as a user would (it must be visible and enabled).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(Method::POST, &format!("/element/{id}/click"), None)
            .await;
    }

    /// Types `text` into the element `css` finds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Presses Enter on the element `css` finds (WebDriver focuses it first).
    pub async fn press_enter(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": "\u{E007}"})),
        )
        .await;
    }

    /// Runs a Chrome DevTools Protocol command.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(
            Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    /// Makes the page see a light or dark system theme (`prefers-color-scheme`).
    pub async fn color_scheme(&self, scheme: &str) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// Resizes the window (a phone's width, say).
    pub async fn window(&self, width: u32, height: u32) {
        self.call(
            Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.call(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64"))
            .expect("a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The page's console messages since the last call (errors included).
    pub async fn console(&self) -> Vec<Value> {
        let value = self
            .call(Method::POST, "/se/log", Some(json!({"type": "browser"})))
            .await;
        value.as_array().cloned().unwrap_or_default()
    }

    /// Fails when the page logged an error or a warning, except messages `allowed` names
    /// (the failed connections a server restart causes, say).
    pub async fn assert_no_console_errors(&self, allowed: &[&str]) {
        let bad: Vec<Value> = self
            .console()
            .await
            .into_iter()
            .filter(|m| matches!(m["level"].as_str(), Some("SEVERE") | Some("WARNING")))
            .filter(|m| {
                let text = m["message"].as_str().unwrap_or_default();
                !allowed.iter().any(|a| text.contains(a))
            })
            .collect();
        assert!(bad.is_empty(), "the page logged errors: {bad:#?}");
    }
}

/// Where the test run saves screenshots: `target/ui-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/ui-screenshots")
        .to_path_buf()
}
