//! A real browser for end-to-end tests: Debian's `chromium` driven by its
//! `chromedriver` over the W3C WebDriver protocol (JSON over HTTP, sent
//! with `curl` from the same lab namespace). Headless; its profile lives in
//! the lab's directory; the session and the driver end when dropped.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::netns::{Lab, Netns, Proc, wait_until};

/// The port chromedriver listens on inside the namespace.
const DRIVER_PORT: u16 = 9515;
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session in one lab namespace.
pub struct Browser<'a, N: Netns> {
    lab: &'a Lab,
    at: &'a N,
    session: String,
    driver: Option<Proc>,
}

impl<'a, N: Netns> Browser<'a, N> {
    /// Starts chromedriver and a headless chromium session in `at`.
    pub fn start(lab: &'a Lab, at: &'a N) -> Self {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing (scripts/install-deps.sh)"
            );
        }
        let port = format!("--port={DRIVER_PORT}");
        let driver = lab.spawn(at, "/usr/bin/chromedriver", &[&port], &[]);
        let profile = lab.dir().join("chromium-profile");
        fs::create_dir_all(&profile).expect("profile dir");
        let profile_arg = format!("--user-data-dir={}", profile.display());
        let mut browser = Self {
            lab,
            at,
            session: String::new(),
            driver: Some(driver),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900", profile_arg]
            }
        }}});
        let mut answer = Value::Null;
        let up = wait_until(Duration::from_secs(20), || {
            answer = browser.call("POST", "/session", Some(&caps));
            answer["value"]["sessionId"].is_string()
        });
        assert!(up, "no WebDriver session: {answer}");
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("http://127.0.0.1:{DRIVER_PORT}{path}");
        let text = body.map(Value::to_string);
        let mut args = vec!["-s", "-X", method, "-H", "Content-Type: application/json"];
        if let Some(t) = &text {
            args.extend(["--data-binary", t]);
        }
        args.push(&url);
        let run = self.lab.exec(self.at, "curl", &args);
        serde_json::from_str(&run.stdout).unwrap_or(Value::Null)
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.session_call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v["value"][ELEMENT_KEY].as_str().map(String::from)
    }

    /// Waits up to `limit` for an element matching `css`.
    pub fn wait_for(&self, css: &str, limit: Duration) -> String {
        let mut found = None;
        let ok = wait_until(limit, || {
            found = self.find(css);
            found.is_some()
        });
        assert!(
            ok,
            "no element {css} within {limit:?}; page text: {}",
            self.page_text()
        );
        found.unwrap_or_default()
    }

    /// Sends `action` (`click` or `value`) to the element matching `css`,
    /// finding it again if the page replaced it meanwhile (a stale element:
    /// the UI redraws its tables every 2 s).
    fn act(&self, css: &str, action: &str, body: &Value) {
        let mut answer = Value::Null;
        let done = wait_until(Duration::from_secs(10), || {
            let el = self.wait_for(css, Duration::from_secs(10));
            answer = self.session_call("POST", &format!("/element/{el}/{action}"), Some(body));
            answer.get("value").is_some_and(Value::is_null)
        });
        assert!(done, "{action} on {css} failed: {answer}");
    }

    /// Clicks the element matching `css` (waiting for it).
    pub fn click(&self, css: &str) {
        self.act(css, "click", &json!({}));
    }

    /// Types `text` into the element matching `css` (waiting for it).
    pub fn type_into(&self, css: &str, text: &str) {
        self.act(css, "value", &json!({ "text": text }));
    }

    /// The visible text of the element matching `css` (empty if none).
    pub fn text(&self, css: &str) -> String {
        let Some(el) = self.find(css) else {
            return String::new();
        };
        self.session_call("GET", &format!("/element/{el}/text"), None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The whole page's visible text.
    pub fn page_text(&self) -> String {
        self.text("body")
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.session_call("GET", "/screenshot", None);
        let b64 = v["value"].as_str().unwrap_or_default();
        let tmp = self.lab.dir().join("screenshot.b64");
        fs::write(&tmp, b64).expect("screenshot");
        let out = std::process::Command::new("base64")
            .arg("-d")
            .arg(&tmp)
            .output()
            .expect("base64 -d");
        fs::write(path, out.stdout).expect("write screenshot");
    }
}

impl<N: Netns> Drop for Browser<'_, N> {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(driver) = self.driver.take() {
            driver.kill();
        }
    }
}
