//! `imagelab serve` end to end: the real binary on 127.0.0.1 with an ephemeral port, a real
//! HTTP client (ureq), the mock backend (and candle once, on the tiny fixture): every route,
//! event order, cancel, FIFO queueing, bad input, body limits, path escapes, auth, graceful
//! stop, stdio mode through a child process, a bounded load loop, and the `webuiapi` Python
//! client as an outside A1111 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::util::{imagelab, parameters_of, repo_root};

/// A running `imagelab serve` child, killed on drop.
struct Server {
    child: Child,
    base: String,
    out: tempfile::TempDir,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `imagelab serve --backend mock --port 0` with `extra` flags and a mock step delay.
    fn start(step_ms: u64, extra: &[&str]) -> Self {
        let out = tempfile::tempdir().expect("tempdir");
        Self::start_in(out, step_ms, extra)
    }

    fn start_in(out: tempfile::TempDir, step_ms: u64, extra: &[&str]) -> Self {
        let mut command = imagelab();
        command
            .args(["serve", "--backend", "mock", "--port", "0", "--out"])
            .arg(out.path())
            .args(extra)
            .env("IMAGELAB_MOCK_STEP_MS", step_ms.to_string())
            .env("HF_HUB_CACHE", out.path().join("hf-cache"))
            .env("HF_HUB_OFFLINE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("imagelab serve starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        stdout.read_line(&mut banner).expect("banner");
        let address = banner
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .to_owned();
        Self { child, base: format!("http://{address}"), out, _stdout: stdout }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        answer(agent().get(&self.url(path)).call())
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(agent().post(&self.url(path)).send_json(body.clone()))
    }

    fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        answer(
            agent().post(&self.url(path)).set("Content-Type", "application/json").send_bytes(body),
        )
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        answer(agent().delete(&self.url(path)).call())
    }

    /// Polls `GET /jobs/{job}` until it has finished; returns it.
    fn wait_job(&self, job: u64) -> Value {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let (status, view) = self.get(&format!("/jobs/{job}"));
            assert_eq!(status, 200, "{view}");
            if matches!(
                view["state"].as_str(),
                Some("done" | "failed" | "cancelled" | "interrupted")
            ) {
                return view;
            }
            assert!(Instant::now() < deadline, "job {job} never finished: {view}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until job `job` is running with at least one step done.
    fn wait_running(&self, job: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, view) = self.get(&format!("/jobs/{job}"));
            if view["state"] == "running" && view["progress"]["step"].as_u64().unwrap_or(0) > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "job {job} never ran: {view}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A named thread (house rule) for a test's concurrent client.
fn spawn_named<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new().name("server-test-client".into()).spawn(body).expect("thread")
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_mins(2)).build()
}

/// Status and JSON body, for success and error answers alike.
fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("request failed: {err}"),
    };
    let status = response.status();
    let text = response.into_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A small job for the mock.
fn small_request(prompt: &str, steps: u32, batch: u32) -> Value {
    json!({"prompt": prompt, "steps": steps, "batch": batch, "width": 64, "height": 64, "seed": 7})
}

/// Reads a Server-Sent Events stream until `finished`: (event name, data) pairs.
fn read_events(reader: impl Read) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    for line in BufReader::new(reader).lines() {
        let line = line.expect("sse line");
        if let Some(value) = line.strip_prefix("event:") {
            value.trim().clone_into(&mut name);
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            let parsed: Value = serde_json::from_str(&data).expect("event json");
            assert_eq!(parsed["event"], name.as_str(), "event name matches its JSON");
            let done = name == "finished";
            events.push((std::mem::take(&mut name), parsed));
            data.clear();
            if done {
                break;
            }
        }
    }
    events
}

fn shapes() -> Value {
    let path = repo_root().join("tests/fixtures/a1111/api_shapes.json");
    serde_json::from_slice(&fs_err::read(path).expect("shapes")).expect("json")
}

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    keys
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("str").to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn openapi_document_is_checked_in() {
    let generated = imagelab::server::openapi::document_text();
    let path = repo_root().join("docs/openapi.json");
    let checked_in = fs_err::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "docs/openapi.json is out of date: run `cargo run -- serve --openapi > docs/openapi.json`"
    );
    let document: Value = serde_json::from_str(&generated).expect("json");
    for path in ["/jobs", "/jobs/{id}/events", "/sdapi/v1/txt2img", "/sdapi/v1/progress"] {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }
    let request = &document["components"]["schemas"]["Request"]["properties"];
    assert!(request["prompt"].is_object() && request["sweep"].is_object(), "{request}");
}

#[test]
fn health_models_and_the_document_are_served() {
    let server = Server::start(0, &[]);
    let (status, health) = server.get("/health");
    assert_eq!(status, 200);
    assert_eq!((health["status"].as_str(), health["backend"].as_str()), (Some("ok"), Some("mock")));
    assert_eq!(health["default_model"], "SDXL Base 1.0");
    assert_eq!(
        health["queue"],
        json!({"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0, "paused": false})
    );
    let (status, models) = server.get("/models");
    assert_eq!(status, 200);
    let listed = models["models"].as_array().expect("models");
    assert_eq!(listed.len(), imagelab::models::Catalog::builtin().entries().len());
    assert!(listed.iter().all(|model| model["state"] == "not_downloaded"), "{models}");
    let (status, document) = server.get("/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(document, imagelab::server::openapi::document());
    let (status, missing) = server.get("/nope");
    assert_eq!(status, 404, "{missing}");
}

#[test]
fn a_job_streams_its_events_in_order_and_its_images_are_served() {
    let server = Server::start(15, &[]);
    let (status, accepted) = server.post("/jobs", &small_request("a fox", 5, 2));
    assert_eq!(status, 202, "{accepted}");
    let job = accepted["job"].as_u64().expect("job");
    assert_eq!((accepted["images"].as_u64(), accepted["seed"].as_u64()), (Some(2), Some(7)));
    let stream = agent().get(&server.url(&format!("/jobs/{job}/events"))).call().expect("sse");
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let events = read_events(stream.into_reader());
    let kept: Vec<&str> = events
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !matches!(*name, "progress" | "preview" | "model_loading"))
        .collect();
    assert_eq!(
        kept,
        ["queued", "item_started", "image_saved", "image_saved", "item_saved", "finished"]
    );
    // Progress is lossy but ordered: within each image, steps only go up; every step of a
    // live stream arrives before that image is saved.
    let mut last = (0, 0);
    for (name, event) in &events {
        if name == "progress" {
            let at =
                (event["image"].as_u64().expect("image"), event["step"].as_u64().expect("step"));
            assert!(at > last, "progress went from {last:?} to {at:?}");
            last = at;
            assert_eq!(event["steps"], 5);
        }
        assert_eq!(event["job"], job, "{event}");
    }
    assert_eq!(last, (1, 5), "the last step of the last image was seen");
    assert!(events.iter().any(|(name, e)| name == "preview" && e["preview"]["format"] == "png"));
    let finished = &events.last().expect("finished").1;
    assert_eq!(finished["state"], "done");
    let saved: Vec<&Value> =
        events.iter().filter(|(n, _)| n == "image_saved").map(|(_, e)| e).collect();
    assert_eq!(saved[0]["image"]["seed"], 7);
    assert_eq!(saved[1]["image"]["seed"], 8);
    let url = saved[0]["image"]["url"].as_str().expect("url");
    let response = agent().get(&server.url(url)).call().expect("image");
    assert_eq!(response.header("content-type"), Some("image/png"));
    let mut bytes = Vec::new();
    response.into_reader().read_to_end(&mut bytes).expect("bytes");
    let on_disk = server.out.path().join(saved[0]["image"]["path"].as_str().expect("path"));
    assert_eq!(bytes, fs_err::read(&on_disk).expect("file"), "the served file is the saved one");
    assert!(parameters_of(&on_disk).contains("Seed: 7"));
    // A stream opened after the end replays the kept events and ends.
    let replay = read_events(
        agent().get(&server.url(&format!("/jobs/{job}/events"))).call().expect("sse").into_reader(),
    );
    let replayed: Vec<&str> = replay.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        replayed,
        ["queued", "item_started", "image_saved", "image_saved", "item_saved", "finished"]
    );
    let view = server.wait_job(job);
    assert_eq!(view["saved"].as_array().map(Vec::len), Some(2));
    assert_eq!(view["request"]["prompt"], "a fox");
    assert_eq!(view["origin"], "api");
}

#[test]
fn jobs_can_be_cancelled_waiting_or_running() {
    let server = Server::start(20, &[]);
    let long = server.post("/jobs", &small_request("long", 200, 1)).1["job"].as_u64().expect("job");
    let waiting =
        server.post("/jobs", &small_request("waiting", 5, 1)).1["job"].as_u64().expect("job");
    let (status, answer) = server.delete(&format!("/jobs/{waiting}"));
    assert_eq!((status, answer["state"].as_str()), (202, Some("queued")), "{answer}");
    assert_eq!(server.wait_job(waiting)["state"], "cancelled");
    server.wait_running(long);
    let (status, answer) = server.delete(&format!("/jobs/{long}"));
    assert_eq!((status, answer["state"].as_str()), (202, Some("running")), "{answer}");
    let view = server.wait_job(long);
    assert_eq!(view["state"], "cancelled");
    assert!(view["saved"].as_array().is_some_and(Vec::is_empty), "nothing half-written: {view}");
    let (status, answer) = server.delete(&format!("/jobs/{long}"));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(server.delete("/jobs/999").0, 404);
    // The jobs log says so too.
    let jobs_log = fs_err::read_to_string(server.out.path().join("jobs.log")).expect("jobs.log");
    assert!(jobs_log.contains("cancelled by user"), "{jobs_log}");
}

#[test]
fn a_closed_stream_cancels_only_when_asked() {
    let server = Server::start(20, &[]);
    for (cancel, expected) in [(true, "cancelled"), (false, "done")] {
        let job =
            server.post("/jobs", &small_request("watched", 40, 1)).1["job"].as_u64().expect("job");
        let url = server.url(&format!("/jobs/{job}/events?cancel_on_disconnect={cancel}"));
        let mut reader = BufReader::new(agent().get(&url).call().expect("sse").into_reader());
        let mut line = String::new();
        reader.read_line(&mut line).expect("first line");
        drop(reader);
        assert_eq!(server.wait_job(job)["state"], expected, "cancel_on_disconnect={cancel}");
    }
}

#[test]
fn ten_concurrent_a1111_requests_run_in_queue_order() {
    let server = Arc::new(Server::start(5, &[]));
    let barrier = Arc::new(Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|index| {
            let (server, barrier) = (Arc::clone(&server), Arc::clone(&barrier));
            spawn_named(move || {
                barrier.wait();
                let body = json!({"prompt": format!("request {index}"), "seed": index, "steps": 4, "width": 64, "height": 64});
                server.post("/sdapi/v1/txt2img", &body)
            })
        })
        .collect();
    let mut jobs = Vec::new();
    for thread in threads {
        let (status, answer) = thread.join().expect("thread");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["images"].as_array().map(Vec::len), Some(1));
        let info: Value =
            serde_json::from_str(answer["info"].as_str().expect("info")).expect("json");
        jobs.push(info["imagelab"]["job"].as_u64().expect("job"));
    }
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(jobs.len(), 10, "ten distinct jobs");
    // FIFO: each job started after the one queued before it had finished.
    let views: Vec<Value> = jobs.iter().map(|job| server.get(&format!("/jobs/{job}")).1).collect();
    for pair in views.windows(2) {
        let finished = pair[0]["finished_at"].as_str().expect("finished");
        let started = pair[1]["started_at"].as_str().expect("started");
        assert!(
            started >= finished,
            "job {} started before job {} finished",
            pair[1]["job"],
            pair[0]["job"]
        );
    }
    let (_, health) = server.get("/health");
    assert_eq!(health["queue"]["done"], 10);
}

#[test]
fn bad_json_and_wrong_types_are_422_naming_the_field() {
    let server = Server::start(0, &[]);
    let a1111: [(&[u8], &[&str], &str); 6] = [
        (b"{\"prompt\": ", &["body"], "value_error.jsondecode"),
        (br#"{"steps": "many"}"#, &["body", "steps"], "type_error.integer"),
        (br#"{"cfg_scale": [7]}"#, &["body", "cfg_scale"], "type_error.float"),
        (br#"{"width": 500}"#, &["body", "width"], "value_error"),
        (br#"{"sampler_name": "Nope"}"#, &["body", "sampler_name"], "value_error"),
        (
            br#"{"override_settings": {"sd_model_checkpoint": "no such model"}}"#,
            &["body", "override_settings", "sd_model_checkpoint"],
            "value_error",
        ),
    ];
    for (body, loc, kind) in a1111 {
        let (status, answer) = server.post_raw("/sdapi/v1/txt2img", body);
        assert_eq!(status, 422, "{answer}");
        let detail = &answer["detail"][0];
        let got: Vec<&str> =
            detail["loc"].as_array().expect("loc").iter().filter_map(Value::as_str).collect();
        assert_eq!(got, loc, "{answer}");
        assert_eq!(detail["type"], kind, "{answer}");
        assert!(detail["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, answer) = server.post_raw("/sdapi/v1/txt2img", br#"{"steps": "x"}"#);
    assert_eq!(status, 422);
    assert_eq!(answer, shapes()["validation_error_example"], "FastAPI's answer, field for field");
    let ours: [(&[u8], &str); 4] = [
        (br#"{"steps": "many"}"#, "steps"),
        (br#"{"stepz": 5}"#, "stepz"),
        (br#"{"prompt": "x", "width": 1001}"#, "width"),
        (br#"{"prompt": "x", "scheduler": "plms"}"#, "scheduler"),
    ];
    for (body, field) in ours {
        let (status, answer) = server.post_raw("/jobs", body);
        assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(field)), "{answer}");
    }
    let (status, answer) = server.post_raw("/jobs", b"not json");
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = server.post_raw("/models/preload", br#"{"model": "no such model"}"#);
    assert_eq!((status, answer["field"].as_str()), (422, Some("model")), "{answer}");
    // Nothing was queued by any of them.
    assert_eq!(server.get("/jobs").1, json!([]));
}

#[test]
fn an_oversized_body_is_refused() {
    let server = Server::start(0, &["--max-body-mb", "1"]);
    let big = format!("{{\"prompt\": \"{}\"}}", "x".repeat(1_200_000));
    // Several times: the client sends the whole body before it reads, so an answer sent while
    // the body is still arriving must not turn into a reset.
    for _ in 0..4 {
        let (status, body) = server.post_raw("/jobs", big.as_bytes());
        assert_eq!(status, 413, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("1048576") && error.contains("--max-body-mb"), "{body}");
        let (status, body) = server.post_raw("/sdapi/v1/txt2img", big.as_bytes());
        assert_eq!(status, 413, "{body}");
    }
    assert_eq!(server.get("/health").0, 200, "the server goes on");
}

/// A raw request, so no client normalises the path.
fn raw_get(server: &Server, path: &str) -> u16 {
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("status")
}

#[test]
fn paths_cannot_escape_the_allowed_folders() {
    let secret_dir = tempfile::tempdir().expect("tempdir");
    fs_err::write(secret_dir.path().join("secret.png"), b"not for you").expect("write");
    let server = Server::start(0, &[]);
    let out = server.out.path();
    #[cfg(unix)]
    std::os::unix::fs::symlink(secret_dir.path().join("secret.png"), out.join("link.png"))
        .expect("symlink");
    for path in [
        "/images/../../etc/passwd",
        "/images/%2e%2e/%2e%2e/etc/passwd",
        "/images/..%2Fhf-cache",
        "/images/link.png",
    ] {
        let status = raw_get(&server, path);
        assert!(matches!(status, 400 | 403 | 404), "{path}: {status}");
    }
    assert_eq!(raw_get(&server, "/images/link.png"), 403, "a symlink out of the folder");
    let secret = secret_dir.path().join("secret.png");
    let cases = [
        (json!({"prompt": "x", "init_image": secret}), "init_image", "outside"),
        (
            json!({"prompt": "x", "init_image": format!("{}/../x.png", out.display())}),
            "init_image",
            "..",
        ),
        (json!({"prompt": "x", "model": secret_dir.path()}), "model", "outside"),
        (json!({"prompt": "x", "loras": [{"source": secret, "weight": 1.0}]}), "loras", "outside"),
    ];
    for (body, field, word) in cases {
        let (status, answer) = server.post("/jobs", &body);
        assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(word)), "{answer}");
    }
    // A folder the operator allowed is fine.
    let allowed = Server::start(0, &["--allow-dir", &secret_dir.path().display().to_string()]);
    let image = secret_dir.path().join("init.png");
    image::RgbImage::from_pixel(16, 16, image::Rgb([9, 9, 9])).save(&image).expect("png");
    let (status, answer) =
        allowed.post("/jobs", &json!({"prompt": "x", "init_image": image, "steps": 2}));
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn credentials_are_required_off_loopback_and_enforced() {
    let output = imagelab()
        .args(["serve", "--backend", "mock", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--api-auth") && stderr.contains("0.0.0.0"), "{stderr}");

    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    fs_err::write(&token, "tok-42\n").expect("token");
    let server = Server::start(
        0,
        &["--api-auth", "alice:s3cret", "--api-token-file", &token.display().to_string()],
    );
    let basic =
        |pair: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
    let call = |path: &str, authorization: Option<&str>| {
        let mut request = agent().get(&server.url(path));
        if let Some(value) = authorization {
            request = request.set("Authorization", value);
        }
        match request.call() {
            Ok(response) => (response.status(), None),
            Err(ureq::Error::Status(code, response)) => {
                (code, response.header("www-authenticate").map(str::to_owned))
            }
            Err(err) => panic!("{err}"),
        }
    };
    for path in ["/health", "/sdapi/v1/samplers", "/jobs"] {
        let (status, challenge) = call(path, None);
        assert_eq!(status, 401, "{path}");
        assert!(challenge.is_some_and(|c| c.starts_with("Basic")), "{path}");
        assert_eq!(call(path, Some(&basic("alice:wrong"))).0, 401, "{path}");
        assert_eq!(call(path, Some("Bearer tok-4")).0, 401, "{path}");
        assert_eq!(call(path, Some(&basic("alice:s3cret"))).0, 200, "{path}");
        assert_eq!(call(path, Some("Bearer tok-42")).0, 200, "{path}");
    }
}

#[test]
fn a1111_answers_in_a1111_shapes() {
    let server = Server::start(0, &[]);
    let shapes = shapes();
    let (_, samplers) = server.get("/sdapi/v1/samplers");
    for item in samplers.as_array().expect("list") {
        assert_eq!(keys(item), names(&shapes["sampler_item_fields"]), "{item}");
    }
    let (_, schedulers) = server.get("/sdapi/v1/schedulers");
    for item in schedulers.as_array().expect("list") {
        assert_eq!(keys(item), names(&shapes["scheduler_item_fields"]), "{item}");
    }
    let (_, models) = server.get("/sdapi/v1/sd-models");
    for item in models.as_array().expect("list") {
        assert_eq!(keys(item), names(&shapes["sd_model_item_fields"]), "{item}");
    }
    assert!(
        models.as_array().expect("list").iter().all(|m| m["title"] != "Pixel Art XL"),
        "no LoRA"
    );
    let (_, styles) = server.get("/sdapi/v1/prompt-styles");
    assert!(styles.as_array().expect("list").iter().any(|s| s["name"] == "Cinematic"));
    let (_, progress) = server.get("/sdapi/v1/progress");
    assert_eq!(keys(&progress), names(&shapes["progress_response_fields"]));
    assert_eq!(keys(&progress["state"]), names(&shapes["progress_state_keys"]));
    assert_eq!(server.post("/sdapi/v1/interrupt", &json!({})).1, shapes["interrupt_answer"]);
    assert_eq!(server.post("/sdapi/v1/skip", &json!({})).1, shapes["skip_answer"]);
    let (status, answer) = server.post(
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "SDXL Turbo", "CLIP_stop_at_last_layers": 2}),
    );
    assert_eq!((status, &answer), (200, &shapes["set_options_answer"]));
    assert_eq!(server.get("/sdapi/v1/options").1["sd_model_checkpoint"], "SDXL Turbo");
    let (status, answer) =
        server.post("/sdapi/v1/options", &json!({"sd_model_checkpoint": "nope"}));
    assert_eq!(status, 422, "{answer}");

    let body = json!({"prompt": "a fox", "negative_prompt": "blurry", "seed": 3, "steps": 3, "width": 64, "height": 64, "batch_size": 2, "n_iter": 2, "styles": ["Cinematic"], "sampler_name": "DPM++ 2M", "scheduler": "Karras", "enable_hr": true, "frobnicate": 1});
    let (status, answer) = server.post("/sdapi/v1/txt2img", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(keys(&answer), names(&shapes["text_to_image_response_fields"]));
    let parameters = &answer["parameters"];
    assert_eq!(
        keys(parameters),
        names(&shapes["txt2img_request_fields"]),
        "every A1111 field, no others"
    );
    assert_eq!(
        (parameters["prompt"].as_str(), parameters["sampler_index"].as_str()),
        (Some("a fox"), Some("Euler"))
    );
    let info: Value =
        serde_json::from_str(answer["info"].as_str().expect("info string")).expect("json");
    let mut info_keys = keys(&info);
    info_keys.retain(|key| key != "imagelab");
    assert_eq!(info_keys, names(&shapes["processed_js_keys"]));
    assert_eq!(info["all_seeds"], json!([3, 4, 5, 6]), "batch_size × n_iter images, seed + i");
    assert_eq!(info["batch_size"], 2);
    assert_eq!(info["sampler_name"], "DPM++ 2M");
    assert_eq!(info["extra_generation_params"]["Schedule type"], "Karras");
    assert_eq!(info["sd_model_name"], "SDXL Turbo", "the model set by /options");
    assert!(
        info["prompt"].as_str().is_some_and(|p| p.starts_with("a fox, ")),
        "the style applied: {info}"
    );
    let notes: Vec<&str> = info["imagelab"]["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        notes.iter().any(|n| n.starts_with("frobnicate"))
            && notes.iter().any(|n| n.starts_with("enable_hr")),
        "{notes:?}"
    );
    let images = answer["images"].as_array().expect("images");
    assert_eq!(images.len(), 4);
    let png = base64::engine::general_purpose::STANDARD
        .decode(images[2].as_str().expect("b64"))
        .expect("base64");
    let decoded = image::load_from_memory(&png).expect("png").to_rgb8();
    assert_eq!(decoded.dimensions(), (64, 64));
    let chunks = imagelab::storage::metadata::png_io::read_text_chunks(&png).expect("chunks");
    let infotext = &chunks.iter().find(|(k, _)| k == "parameters").expect("parameters").1;
    assert!(
        infotext.contains("Seed: 5") && infotext.contains("Schedule type: Karras"),
        "{infotext}"
    );
    assert_eq!(info["infotexts"][2].as_str(), Some(infotext.as_str()));
    assert!(chunks.iter().any(|(k, _)| k == "imagelab"), "our metadata too");

    let (status, answer) = server.post(
        "/sdapi/v1/txt2img",
        &json!({"prompt": "quiet", "steps": 2, "width": 64, "height": 64, "send_images": false}),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["images"], json!([]));
}

#[test]
fn img2img_keeps_its_init_image_beside_the_outputs() {
    let server = Server::start(0, &[]);
    let mut png = Vec::new();
    image::RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 10, 128]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode");
    let encoded =
        format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
    let body = json!({"init_images": [encoded], "prompt": "night", "denoising_strength": 0.4, "steps": 3, "width": 32, "height": 16, "seed": 9, "include_init_images": false});
    let (status, answer) = server.post("/sdapi/v1/img2img", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(keys(&answer["parameters"]), names(&shapes()["img2img_request_fields"]));
    assert_eq!(answer["parameters"]["init_images"], Value::Null, "not echoed unless asked");
    let info: Value = serde_json::from_str(answer["info"].as_str().expect("info")).expect("json");
    assert_eq!(info["denoising_strength"], json!(0.4_f32));
    let kept = crate::util::files_below(&server.out.path().join(".inputs"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fs_err::read(&kept[0]).expect("kept"), png, "the init image as sent");
    let saved = PathBuf::from(info["imagelab"]["paths"][0].as_str().expect("path"));
    let metadata = fs_err::read(server.out.path().join(saved)).expect("png");
    let recorded = imagelab::storage::metadata::png_io::read_generation_info(&metadata)
        .expect("read")
        .expect("ours");
    assert_eq!(
        recorded.init_image.map(PathBuf::from).map(|p| p.canonicalize().expect("exists")),
        Some(kept[0].canonicalize().expect("kept"))
    );
    for (bad, field) in [
        (json!({"prompt": "x"}), "init_images"),
        (json!({"init_images": ["aGVsbG8="]}), "init_images"),
        (json!({"init_images": [encoded], "mask": encoded}), "mask"),
    ] {
        let (status, answer) = server.post("/sdapi/v1/img2img", &bad);
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["detail"][0]["loc"][1], field, "{answer}");
    }
}

#[test]
fn progress_and_interrupt_follow_the_running_job() {
    let server = Arc::new(Server::start(20, &[]));
    let runner = {
        let server = Arc::clone(&server);
        spawn_named(move || {
            server.post("/sdapi/v1/txt2img", &json!({"prompt": "slow", "steps": 100, "batch_size": 3, "width": 64, "height": 64}))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let progress = loop {
        let (_, progress) = server.get("/sdapi/v1/progress");
        if progress["state"]["sampling_step"].as_u64().unwrap_or(0) > 2 {
            break progress;
        }
        assert!(Instant::now() < deadline, "never sampled: {progress}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let fraction = progress["progress"].as_f64().expect("progress");
    assert!(fraction > 0.01 && fraction < 0.34, "{progress}");
    assert!(progress["eta_relative"].as_f64().is_some_and(|eta| eta > 0.0), "{progress}");
    assert_eq!(
        (progress["state"]["job_count"].as_u64(), progress["state"]["sampling_steps"].as_u64()),
        (Some(3), Some(100))
    );
    assert_eq!(progress["state"]["job"], "scripts_txt2img");
    let preview = base64::engine::general_purpose::STANDARD
        .decode(progress["current_image"].as_str().expect("image"))
        .expect("b64");
    assert!(image::load_from_memory(&preview).is_ok(), "current_image is a PNG");
    assert!(server.get("/sdapi/v1/progress?skip_current_image=true").1["current_image"].is_null());
    assert_eq!(server.post("/sdapi/v1/interrupt", &json!({})).1, json!({}));
    let (status, answer) = runner.join().expect("thread");
    assert_eq!(status, 200, "an interrupted request is answered: {answer}");
    let info: Value = serde_json::from_str(answer["info"].as_str().expect("info")).expect("json");
    assert_eq!(info["imagelab"]["state"], "cancelled");
    assert!(answer["images"].as_array().is_some_and(|images| images.len() < 3));
    let (_, idle) = server.get("/sdapi/v1/progress");
    assert_eq!(
        (idle["progress"].as_f64(), idle["state"]["job_count"].as_u64()),
        (Some(0.0), Some(0))
    );
}

#[test]
fn preload_loads_a_model_in_queue_order() {
    let server = Server::start(0, &[]);
    let (status, answer) = server.post("/models/preload", &json!({"model": "SDXL Turbo"}));
    assert_eq!(status, 202, "{answer}");
    let view = server.wait_job(answer["job"].as_u64().expect("job"));
    assert_eq!((view["state"].as_str(), view["kind"].as_str()), (Some("done"), Some("preload")));
    assert_eq!(server.get("/health").1["loaded_model"], "SDXL Turbo");
    let (status, answer) = server.post("/models/preload", &json!({"model": "Pixel Art XL"}));
    assert_eq!(
        (status, answer["field"].as_str()),
        (422, Some("model")),
        "a LoRA is not a model: {answer}"
    );
}

/// How a test asks the server to stop.
#[derive(Clone, Copy)]
enum StopBy {
    /// `POST /sdapi/v1/server-stop` (`--api-server-stop`): exit 0.
    Route,
    /// SIGTERM through the process's clean-stop handling: exit 143.
    Sigterm,
}

#[test]
fn a_graceful_stop_finishes_the_running_job_and_drops_the_queue() {
    graceful_stop(StopBy::Route);
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_the_running_image_then_exits_143() {
    graceful_stop(StopBy::Sigterm);
}

fn graceful_stop(by: StopBy) {
    let server = Arc::new(Server::start(20, &["--api-server-stop"]));
    let runner = {
        let server = Arc::clone(&server);
        spawn_named(move || {
            server.post(
                "/sdapi/v1/txt2img",
                &json!({"prompt": "finish me", "steps": 40, "width": 64, "height": 64}),
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/sdapi/v1/progress").1["state"]["sampling_step"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "never sampled");
        std::thread::sleep(Duration::from_millis(10));
    }
    let queued =
        server.post("/jobs", &small_request("never runs", 5, 1)).1["job"].as_u64().expect("job");
    // Connected before the stop (a stopping server takes no new connections); read meanwhile.
    let stream = agent()
        .get(&server.url(&format!("/jobs/{queued}/events")))
        .call()
        .expect("sse")
        .into_reader();
    let events = spawn_named(move || read_events(stream));
    match by {
        StopBy::Route => {
            let (status, answer) = server.post("/sdapi/v1/server-stop", &json!({}));
            assert_eq!((status, answer.as_str()), (200, Some("Stopping.")));
        }
        StopBy::Sigterm => {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &server.child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success());
        }
    }
    let (status, answer) = runner.join().expect("thread");
    assert_eq!(status, 200, "the running request finished: {answer}");
    assert_eq!(answer["images"].as_array().map(Vec::len), Some(1));
    let events = events.join().expect("thread");
    assert_eq!(
        events.last().map(|(_, e)| e["state"].clone()),
        Some(json!("interrupted")),
        "{events:?}"
    );
    let mut server = Arc::into_inner(server).expect("one owner");
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        code,
        Some(match by {
            StopBy::Route => 0,
            StopBy::Sigterm => 143,
        })
    );
    assert!(
        std::net::TcpStream::connect(server.base.trim_start_matches("http://")).is_err(),
        "not listening"
    );
    let log = fs_err::read_to_string(server.out.path().join("jobs.log")).expect("jobs.log");
    assert_eq!(
        log.lines().count(),
        1,
        "one finished item, one line (the dropped job never started): {log}"
    );
    assert!(log.contains("finish me") && log.contains("\"status\":\"done\""), "{log}");
}

#[test]
fn stdio_mode_speaks_json_lines_through_a_child_process() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut child = imagelab()
        .args(["serve", "--stdio", "--backend", "mock", "--out"])
        .arg(out.path())
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let lines = [
        small_request("first", 3, 2).to_string(),
        r#"{"prompt": "bad", "steps": "many"}"#.to_owned(),
        r#"{"command": "health"}"#.to_owned(),
        small_request("second", 2, 1).to_string(),
        r#"{"command": "dance"}"#.to_owned(),
    ];
    for line in &lines {
        writeln!(stdin, "{line}").expect("write");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("exits");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let find = |event: &str, line: u64| {
        events.iter().position(|e| e["event"] == event && e["line"] == line)
    };
    let first = &events[find("accepted", 1).expect("line 1 accepted")];
    let second = &events[find("accepted", 4).expect("line 4 accepted")];
    let rejected = &events[find("rejected", 2).expect("line 2 rejected")];
    assert_eq!(rejected["field"], "steps");
    assert_eq!(events[find("rejected", 5).expect("line 5 rejected")]["field"], "command");
    assert_eq!(events[find("health", 3).expect("health")]["health"]["backend"], "mock");
    for (accepted, images) in [(first, 2), (second, 1)] {
        let job = &accepted["job"];
        let at = |name: &str| events.iter().position(|e| e["event"] == name && &e["job"] == job);
        let (accepted_at, queued_at, finished_at) = (
            events.iter().position(|e| std::ptr::eq(e, accepted)).expect("accepted"),
            at("queued").expect("queued"),
            at("finished").expect("finished"),
        );
        assert!(accepted_at < queued_at && queued_at < finished_at, "{events:?}");
        let saved =
            events.iter().filter(|e| e["event"] == "image_saved" && &e["job"] == job).count();
        assert_eq!(saved, images);
        assert_eq!(events[finished_at]["state"], "done");
    }
    assert_eq!(events.last().expect("last"), &json!({"event": "stopped", "jobs": 2}));
    assert_eq!(crate::util::pngs_below(out.path()).len(), 3);
}

/// Resident memory of a process in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = fs_err::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_load_loop_loses_nothing_and_memory_stays_flat() {
    let server = Arc::new(Server::start(0, &["--keep-jobs", "50"]));
    let run = |count: usize| {
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let server = Arc::clone(&server);
                spawn_named(move || {
                    let mut jobs = Vec::new();
                    for index in 0..count / 4 {
                        let body = json!({"prompt": format!("load {thread} {index}"), "steps": 1, "width": 16, "height": 16});
                        let (status, answer) = server.post("/sdapi/v1/txt2img", &body);
                        assert_eq!(status, 200, "{answer}");
                        assert_eq!(answer["images"].as_array().map(Vec::len), Some(1));
                        let info: Value = serde_json::from_str(answer["info"].as_str().expect("info")).expect("json");
                        jobs.push(info["imagelab"]["job"].as_u64().expect("job"));
                    }
                    jobs
                })
            })
            .collect();
        threads.into_iter().flat_map(|thread| thread.join().expect("thread")).collect::<Vec<_>>()
    };
    let mut jobs = run(100);
    let warm = resident_kib(server.child.id());
    jobs.extend(run(200));
    let after = resident_kib(server.child.id());
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(jobs.len(), 300, "every request its own job");
    let log = fs_err::read_to_string(server.out.path().join("jobs.log")).expect("jobs.log");
    assert_eq!(log.lines().count(), 300, "every job one jobs-log line");
    assert_eq!(crate::util::pngs_below(server.out.path()).len(), 300);
    let (_, health) = server.get("/health");
    assert_eq!(health["queue"]["done"], 300);
    assert!(health["jobs_known"].as_u64().is_some_and(|known| known <= 50), "{health}");
    assert!(
        after <= warm + 8 * 1024,
        "resident memory grew from {warm} KiB to {after} KiB over 200 requests"
    );
}

#[test]
fn webuiapi_drives_the_server_as_an_a1111_client() {
    let venv = std::process::Command::new(repo_root().join("scripts/webuiapi-env")).output();
    let python = match venv {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        Ok(output) => {
            eprintln!(
                "SKIPPED: no Python with webuiapi (scripts/webuiapi-env failed: {})",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return;
        }
        Err(err) => {
            eprintln!("SKIPPED: scripts/webuiapi-env did not run: {err}");
            return;
        }
    };
    let server = Server::start(10, &[]);
    let port = server.base.rsplit(':').next().expect("port").to_owned();
    let output = std::process::Command::new(python)
        .arg(repo_root().join("tools/webuiapi/check_a1111.py"))
        .args(["--port", &port])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("checks passed"), "{stdout}");
    eprintln!("{stdout}");
}

#[test]
fn candle_serves_the_tiny_pipeline_as_diffusers_made_it() {
    let fixtures = repo_root().join("tests/fixtures/diffusion");
    let folder = fixtures.join("sdxl_tiny");
    let runs: Value = serde_json::from_slice(
        &fs_err::read(fixtures.join("refs/sdxl_tiny/runs.json")).expect("runs"),
    )
    .expect("json");
    let run = &runs["runs"]["txt2img_euler_a"];
    let out = tempfile::tempdir().expect("tempdir");
    let mut command = imagelab();
    command
        .args(["serve", "--backend", "candle", "--port", "0", "--allow-dir"])
        .arg(&fixtures)
        .arg("--model")
        .arg(&folder)
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    stdout.read_line(&mut banner).expect("banner");
    let server = Server {
        child,
        base: banner
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(|a| format!("http://{a}"))
            .expect("address"),
        out,
        _stdout: stdout,
    };
    let body = json!({
        "prompt": run["prompt"], "negative_prompt": run["negative"], "seed": run["seed"],
        "steps": run["steps"], "cfg_scale": run["cfg"], "width": run["width"], "height": run["height"],
        "sampler_name": "Euler a", "scheduler": "Automatic",
    });
    let (status, answer) = server.post("/sdapi/v1/txt2img", &body);
    assert_eq!(status, 200, "{answer}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(answer["images"][0].as_str().expect("b64"))
        .expect("base64");
    let ours = image::load_from_memory(&png).expect("png").to_rgb8();
    let bytes =
        fs_err::read(fixtures.join("refs/sdxl_tiny/reference.safetensors")).expect("reference");
    let reference = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let theirs = reference.tensor("txt2img_euler_a.image_u8").expect("image_u8");
    assert_eq!(theirs.shape(), [ours.height() as usize, ours.width() as usize, 3]);
    let worst =
        ours.as_raw().iter().zip(theirs.data()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
    assert!(worst <= 1, "pixels differ by {worst} levels from diffusers");
}

/// The window of `gui --serve` edits a queued job and resumes an unfinished one through the
/// shared service: both jobs are in the job table (`GET /jobs`), from the window, and their
/// events reach it, so they end there as done.
#[test]
fn jobs_the_window_edits_or_resumes_on_a_shared_engine_are_in_the_job_table() {
    use imagelab::app::Wiring;
    use imagelab::engine::mock::MockBackend;
    use imagelab::engine::{Engine, EngineConfig, ResumeOptions, no_waker, prepare_plan};
    use imagelab::models::Catalog;
    use imagelab::models::hub::HubConfig;
    use imagelab::request::{Profiles, Request};
    use imagelab::server::service::Submission;
    use imagelab::server::{Origin, Service, ServiceConfig, StopToken};

    let out = tempfile::tempdir().expect("tempdir");
    let config = || EngineConfig {
        output_root: out.path().to_path_buf(),
        instance_id: None,
        previews: false,
    };
    let plan = |prompt: &str| {
        let request = Request {
            prompt: prompt.into(),
            width: Some(64),
            height: Some(64),
            seed: Some(5),
            ..Request::default()
        };
        let caps = imagelab::engine::Backend::capabilities(&MockBackend::new());
        prepare_plan(&request, &Profiles::builtin(), &Catalog::builtin(), &caps).expect("plan")
    };
    // An earlier process queued a job and stopped before running it: unfinished in the journal.
    let earlier =
        Engine::spawn(Box::new(MockBackend::new()), config(), no_waker()).expect("engine");
    earlier.pause(true).expect("pause");
    earlier.submit(plan("a lighthouse")).expect("submit");
    drop(earlier.shutdown());

    let wiring = Wiring { backend: Box::new(MockBackend::new()), engine: config(), notice: None };
    let hub = HubConfig::offline_at(out.path().join("hub"));
    let service =
        Service::start(wiring, ServiceConfig::new(Profiles::builtin(), hub), StopToken::new())
            .expect("service");
    let window = |label: &str| Submission { origin: Origin::Window, label: label.to_owned() };
    service.engine_do(|engine| engine.pause(true)).expect("pause");
    let first = service.submit(plan("a fox"), window("a fox"), |_| {}).expect("submit");
    let edited = service.replace(first, plan("a red fox"), window("a red fox")).expect("replace");
    let unfinished = service.engine_do(Engine::unfinished_jobs).expect("unfinished");
    let idle: Vec<_> = unfinished.iter().filter(|job| !job.live).collect();
    let [lighthouse] = idle.as_slice() else {
        panic!("only the earlier process's job is unfinished and idle: {unfinished:?}")
    };
    let resumed = service
        .resume(&lighthouse.id, ResumeOptions::default(), window("a lighthouse"))
        .expect("resume")
        .expect("work left");
    service.engine_do(|engine| engine.pause(false)).expect("unpause");

    let view =
        |job| serde_json::to_value(service.job(job).expect("in the job table")).expect("json");
    let deadline = Instant::now() + Duration::from_mins(1);
    for (job, label) in [(edited, "a red fox"), (resumed.job, "a lighthouse")] {
        while view(job)["state"] != "done" {
            assert!(Instant::now() < deadline, "job {job}: {}", view(job));
            std::thread::sleep(Duration::from_millis(20));
        }
        let shown = view(job);
        assert_eq!(
            (shown["origin"].as_str(), shown["label"].as_str()),
            (Some("window"), Some(label))
        );
        assert_eq!(shown["saved"].as_array().map(Vec::len), Some(1), "{shown}");
    }
    let listed: Vec<u64> = service.jobs().iter().map(|view| view.job).collect();
    assert!(listed.contains(&edited) && listed.contains(&resumed.job), "{listed:?}");
    service.shutdown();
}
