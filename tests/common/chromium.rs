//! Headless Chromium, driven through its DevTools protocol, for the tests
//! of the pages our servers serve (`websocket_server`'s, `mqtt_broker`'s).

use std::path::PathBuf;
use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use super::within;

/// Drives headless Chromium through its DevTools protocol (JSON over a
/// WebSocket, spoken here with tokio-tungstenite).
pub struct Chromium {
    _process: Child,
    devtools: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    profile: PathBuf,
    next_id: u64,
    session: String,
}

impl Chromium {
    pub async fn start() -> Chromium {
        // One profile per browser: two tests may run one each at once.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("websocket-chromium-{}-{n}", std::process::id()));
        let mut process = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium");
        let mut stderr = BufReader::new(process.stderr.take().unwrap()).lines();
        let endpoint = within("chromium's DevTools line", async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.to_string();
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        })
        .await;
        // Keep draining chromium's stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let (devtools, _) = within("DevTools", tokio_tungstenite::connect_async(endpoint))
            .await
            .unwrap();
        let mut chromium = Chromium {
            _process: process,
            devtools,
            profile,
            next_id: 0,
            session: String::new(),
        };
        let target = chromium
            .call("Target.createTarget", r#"{"url":"about:blank"}"#)
            .await;
        let target_id = string_field(&target, "targetId");
        let attached = chromium
            .call(
                "Target.attachToTarget",
                &format!(r#"{{"targetId":"{target_id}","flatten":true}}"#),
            )
            .await;
        chromium.session = string_field(&attached, "sessionId");
        chromium
    }

    /// Sends one DevTools command (to the page once attached) and returns its
    /// JSON response; events that arrive meanwhile are passed to `events`.
    pub async fn call(&mut self, method: &str, params: &str) -> String {
        self.call_watching(method, params, &mut Vec::new()).await
    }

    async fn call_watching(
        &mut self,
        method: &str,
        params: &str,
        events: &mut Vec<String>,
    ) -> String {
        self.next_id += 1;
        let id = self.next_id;
        let session = if self.session.is_empty() {
            String::new()
        } else {
            format!(r#","sessionId":"{}""#, self.session)
        };
        let command = format!(r#"{{"id":{id},"method":"{method}","params":{params}{session}}}"#);
        self.devtools.send(Message::text(command)).await.unwrap();
        loop {
            let message = within(method, self.devtools.next()).await.unwrap().unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            if text.as_str().starts_with(&format!(r#"{{"id":{id},"#)) {
                // A script that threw answers with exceptionDetails, not
                // an error: both are failures.
                assert!(
                    !text.as_str().contains(r#""error":"#)
                        && !text.as_str().contains(r#""exceptionDetails":"#),
                    "{method} failed: {text}"
                );
                return text.as_str().to_string();
            }
            events.push(text.as_str().to_string());
        }
    }

    /// Loads `url` in the page and waits for its load event.
    pub async fn open(&mut self, url: &str) {
        self.call("Page.enable", "{}").await;
        let mut events = Vec::new();
        self.call_watching(
            "Page.navigate",
            &format!(r#"{{"url":"{url}"}}"#),
            &mut events,
        )
        .await;
        let loaded = |events: &[String]| {
            events
                .iter()
                .any(|e| e.contains(r#""method":"Page.loadEventFired""#))
        };
        while !loaded(&events) {
            let message = within("the page's load event", self.devtools.next())
                .await
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                events.push(text.as_str().to_string());
            }
        }
    }

    /// Types `text` into the page's message box and presses Enter, as a user
    /// would. (`text` goes into JSON as it is: no quotes or backslashes.)
    pub async fn type_line(&mut self, text: &str) {
        self.type_into("text", text).await;
    }

    /// Types `text` into the page's input with id `id`, in place of what
    /// it held, then presses Enter.
    pub async fn type_into(&mut self, id: &str, text: &str) {
        let script = format!(
            "document.getElementById('{id}').value = ''; document.getElementById('{id}').focus()"
        );
        self.call(
            "Runtime.evaluate",
            &format!(r#"{{"expression":{script:?}}}"#),
        )
        .await;
        self.call("Input.insertText", &format!(r#"{{"text":"{text}"}}"#))
            .await;
        let enter = r#"{"type":"keyDown","key":"Enter","code":"Enter","windowsVirtualKeyCode":13}"#;
        self.call("Input.dispatchKeyEvent", enter).await;
    }

    /// Waits until the page's message log, its lines joined with `|`, contains
    /// `needle` (the page itself watches its log), and returns that text.
    pub async fn log_with(&mut self, needle: &str) -> String {
        let script = format!(
            "new Promise((resolve) => {{ const log = document.getElementById('log'); \
             const lines = () => [...log.children].map((d) => d.textContent); \
             const check = () => {{ const all = lines().join('|'); if (all.includes({needle:?})) resolve(all); }}; \
             new MutationObserver(check).observe(log, {{ childList: true }}); check(); }})"
        );
        let params =
            format!(r#"{{"expression":{script:?},"awaitPromise":true,"returnByValue":true}}"#);
        let answer = self.call("Runtime.evaluate", &params).await;
        string_field(&answer, "value")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The string value of `"name":"..."` in a DevTools JSON answer (the values
/// we read contain no escaped quotes).
fn string_field(json: &str, name: &str) -> String {
    let start = json
        .find(&format!(r#""{name}":""#))
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + name.len()
        + 4;
    let end = json[start..].find('"').unwrap() + start;
    json[start..end].to_string()
}
