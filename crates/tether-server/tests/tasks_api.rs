//! The tasks, events, users and tokens API, black-box against a real server on a loopback
//! port with auth on: every status code docs/api.md names.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};
use support::{on_both_backends, Backend, Server};

fn kinds(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn a_submitted_task_answers_201_and_starts_its_stream_with_task_created(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let made = s
        .post(
            "/v1/tasks",
            &ann,
            json!({"description": "fix the flaky test", "repository": "acme/app", "max_turns": 20,
                   "max_budget_usd": 1.5, "trace": true, "metadata": {"ticket": "OPS-1"}}),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let task = made.json();
    let id = task["id"].as_str().unwrap();
    assert_eq!(
        made.header("location"),
        Some(format!("/v1/tasks/{id}").as_str())
    );
    assert!(made.header("x-request-id").is_some());
    assert_eq!(task["state"], "SUBMITTED");
    assert_eq!(task["owner"], "ann");
    assert_eq!(task["metadata"]["ticket"], "OPS-1");
    assert_eq!(task["stream_url"], format!("/v1/stream/tasks/{id}"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(s.dir.path().join("admin.token")).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "only the owner may read it"
        );
    }

    let got = s.get(&format!("/v1/tasks/{id}"), &ann).await;
    assert_eq!(got.status, StatusCode::OK);
    let status = &got.json()["status"];
    assert_eq!(status["state"], "SUBMITTED");
    assert_eq!(status["attempt"], 1);

    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(kinds(&page), ["task_created"]);
    assert_eq!(
        page["data"][0]["offset"],
        "0000000000000000_0000000000000001"
    );
    assert_eq!(page["data"][0]["data"]["description"], "fix the flaky test");
    assert_eq!(page["has_more"], false);
    assert_eq!(page["closed"], false);
    s.stop().await;
}

async fn an_idempotency_key_replays_the_original_task_and_refuses_a_different_body(
    backend: Backend,
) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let bob = s.user("bob", "user").await;
    let key = [
        ("content-type", "application/json"),
        ("idempotency-key", "deploy-42"),
    ];
    let body = json!({"description": "deploy"}).to_string();
    let first = s
        .call("POST", "/v1/tasks", Some(&ann), &key, body.clone())
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = s
        .call("POST", "/v1/tasks", Some(&ann), &key, body.clone())
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("idempotent-replay"), Some("true"));
    assert_eq!(again.json()["id"], first.json()["id"]);

    let other = json!({"description": "something else"}).to_string();
    let reused = s.call("POST", "/v1/tasks", Some(&ann), &key, other).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.code(), "IDEMPOTENCY_KEY_REUSED");

    // Keys belong to their user.
    let bobs = s
        .call("POST", "/v1/tasks", Some(&bob), &key, body.clone())
        .await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_ne!(bobs.json()["id"], first.json()["id"]);

    let bad_key = [
        ("content-type", "application/json"),
        ("idempotency-key", "no spaces"),
    ];
    let bad = s
        .call("POST", "/v1/tasks", Some(&ann), &bad_key, body)
        .await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    let listed = s.get("/v1/tasks", &ann).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    s.stop().await;
}

async fn bad_task_bodies_get_400_naming_the_problem_and_create_nothing(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let long = "x".repeat(10_001);
    let cases = [
        (json!({}).to_string(), "description"),
        (json!({"description": ""}).to_string(), "description"),
        (json!({"description": long}).to_string(), "description"),
        (
            json!({"description": "d", "max_turns": 0}).to_string(),
            "max_turns",
        ),
        (
            json!({"description": "d", "max_turns": 501}).to_string(),
            "max_turns",
        ),
        (
            json!({"description": "d", "max_budget_usd": 0.001}).to_string(),
            "max_budget_usd",
        ),
        (
            json!({"description": "d", "colour": "red"}).to_string(),
            "colour",
        ),
        (
            json!({"description": "d", "metadata": {"k": "v".repeat(20_000)}}).to_string(),
            "metadata",
        ),
        ("{not json".to_string(), "invalid body"),
        (String::new(), "JSON body"),
    ];
    let ct = [("content-type", "application/json")];
    for (body, mentions) in cases {
        let r = s
            .call("POST", "/v1/tasks", Some(&ann), &ct, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:.80}: {r:?}");
        assert_eq!(r.code(), "VALIDATION_ERROR");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(mentions),
            "{message:?} should mention {mentions}"
        );
        assert!(r.json()["error"]["request_id"].is_string());
    }
    let listed = s.get("/v1/tasks", &ann).await.json();
    assert_eq!(listed["data"], json!([]));
    s.stop().await;
}

async fn validate_reports_errors_and_warnings_without_creating_anything(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let ok = s
        .post("/v1/tasks/validate", &ann, json!({"description": "d"}))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["valid"], true);
    assert!(!ok.json()["warnings"].as_array().unwrap().is_empty());
    let bad = s
        .post(
            "/v1/tasks/validate",
            &ann,
            json!({"description": "", "max_turns": 9999}),
        )
        .await
        .json();
    assert_eq!(bad["valid"], false);
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["description", "max_turns"]);
    assert_eq!(s.get("/v1/tasks", &ann).await.json()["data"], json!([]));
    s.stop().await;
}

async fn requests_need_a_valid_token_and_a_role_that_allows_them(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let no_token = s.call("GET", "/v1/tasks", None, &[], Bytes::new()).await;
    assert_eq!(
        (no_token.status, no_token.code().as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert_eq!(no_token.header("www-authenticate"), Some("Bearer"));
    let wrong = s.get("/v1/tasks", "tether_nope_nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let basic = s
        .call(
            "GET",
            "/v1/tasks",
            None,
            &[("authorization", "Basic YTpi")],
            Bytes::new(),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);

    let by_worker = s
        .post("/v1/tasks", &worker, json!({"description": "d"}))
        .await;
    assert_eq!(
        (by_worker.status, by_worker.code().as_str()),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let by_user = s.post("/v1/users", &ann, json!({"name": "mallory"})).await;
    assert_eq!(by_user.status, StatusCode::FORBIDDEN);
    let id = s.submit(&ann, "d").await;
    let user_appends = s.events(&ann, &id, json!([{"type": "log"}])).await;
    assert_eq!(user_appends.status, StatusCode::FORBIDDEN);

    let who = s.get("/v1/whoami", &worker).await.json();
    assert_eq!(who, json!({"user": "runner", "role": "worker"}));

    // Revoking a token takes effect at once.
    let issued = s
        .post(
            "/v1/tokens",
            &s.admin,
            json!({"user": "ann", "role": "user"}),
        )
        .await
        .json();
    let second = issued["token"].as_str().unwrap();
    assert_eq!(s.get("/v1/whoami", second).await.status, StatusCode::OK);
    let token_id = issued["id"].as_str().unwrap();
    let revoked = s
        .call(
            "DELETE",
            &format!("/v1/tokens/{token_id}"),
            Some(&s.admin),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/v1/whoami", second).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = s
        .call(
            "DELETE",
            &format!("/v1/tokens/{token_id}"),
            Some(&s.admin),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::NOT_FOUND, "TOKEN_NOT_FOUND")
    );
    assert_eq!(
        s.get("/v1/whoami", &ann).await.status,
        StatusCode::OK,
        "other tokens still work"
    );

    let dup = s.post("/v1/users", &s.admin, json!({"name": "ann"})).await;
    assert_eq!(
        (dup.status, dup.code().as_str()),
        (StatusCode::CONFLICT, "USER_EXISTS")
    );
    let nobody = s
        .post(
            "/v1/tokens",
            &s.admin,
            json!({"user": "nobody", "role": "user"}),
        )
        .await;
    assert_eq!(
        (nobody.status, nobody.code().as_str()),
        (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
    );
    let bad_name = s.post("/v1/users", &s.admin, json!({"name": "a b"})).await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);
    let bad_role = s
        .post(
            "/v1/tokens",
            &s.admin,
            json!({"user": "ann", "role": "root"}),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

async fn admins_list_users_and_every_token_users_list_their_own_and_no_secret_is_shown(
    backend: Backend,
) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let _bob = s.user("bob", "worker").await;
    let users = s.get("/v1/users", &s.admin).await;
    assert_eq!(users.status, StatusCode::OK, "{users:?}");
    let users = users.json();
    let names: Vec<&str> = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "ann", "bob"]);
    let forbidden = s.get("/v1/users", &ann).await;
    assert_eq!(
        (forbidden.status, forbidden.code().as_str()),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );

    let all = s.get("/v1/tokens", &s.admin).await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    let text = String::from_utf8_lossy(&all.body).into_owned();
    for secret in [&s.admin, &ann] {
        let tail = secret.rsplit('_').next().unwrap();
        assert!(!text.contains(tail), "a secret is listed: {text}");
    }
    assert!(!text.contains("hash"), "{text}");
    let all = all.json();
    let rows = all["data"].as_array().unwrap();
    let owners: Vec<(&str, &str)> = rows
        .iter()
        .map(|t| (t["user"].as_str().unwrap(), t["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        owners,
        [("admin", "admin"), ("ann", "user"), ("bob", "worker")]
    );
    for row in rows {
        for field in ["id", "created_at", "last_used_at"] {
            assert!(row.get(field).is_some(), "{field} missing in {row}");
        }
    }
    // The admin token was used by these very requests; ann's by the 403 above.
    let ann_id = ann.split('_').nth(1).unwrap();
    let mine = s.get("/v1/tokens", &ann).await.json();
    let mine = mine["data"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], ann_id);
    assert!(mine[0]["last_used_at"].is_string(), "{mine:?}");
    // Noted in memory, not written per request: the stored row has no time yet.
    let stored = s.control.as_ref().list_tokens(None).await.unwrap();
    let stored_ann = stored.iter().find(|t| t.id == ann_id).unwrap();
    assert_eq!(stored_ann.last_used_at, None);
    s.stop().await;
}

async fn another_users_task_answers_404_everywhere_as_if_it_did_not_exist(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let bob = s.user("bob", "user").await;
    let id = s.submit(&ann, "ann's secret task").await;
    let missing = "tsk_00000000000000000000";
    for task in [id.as_str(), missing, "not-an-id"] {
        for (method, path) in [
            ("GET", format!("/v1/tasks/{task}")),
            ("GET", format!("/v1/tasks/{task}/events")),
            ("GET", format!("/v1/tasks/{task}/events?live=sse")),
            ("GET", format!("/v1/tasks/{task}/export")),
            ("DELETE", format!("/v1/tasks/{task}")),
        ] {
            let r = s.call(method, &path, Some(&bob), &[], Bytes::new()).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (StatusCode::NOT_FOUND, "TASK_NOT_FOUND"),
                "{method} {path}"
            );
        }
        let stream = s
            .get(&format!("/v1/stream/tasks/{task}?offset=-1"), &bob)
            .await;
        assert_eq!(stream.status, StatusCode::NOT_FOUND, "{stream:?}");
    }
    assert_eq!(s.get("/v1/tasks", &bob).await.json()["data"], json!([]));
    // Admins see everyone's.
    assert_eq!(
        s.get(&format!("/v1/tasks/{id}"), &s.admin).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.get("/v1/tasks", &s.admin).await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.stop().await;
}

async fn cancel_appends_one_terminal_event_closes_the_stream_and_a_second_cancel_is_409(
    backend: Backend,
) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    assert_eq!(
        s.events(
            &worker,
            &id,
            json!([{"type": "log", "data": {"line": "hi"}}])
        )
        .await
        .status,
        StatusCode::OK
    );

    let cancelled = s
        .call(
            "DELETE",
            &format!("/v1/tasks/{id}"),
            Some(&ann),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["state"], "CANCELLED");
    let again = s
        .call(
            "DELETE",
            &format!("/v1/tasks/{id}"),
            Some(&ann),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::CONFLICT, "TASK_ALREADY_TERMINAL")
    );
    let late = s.events(&worker, &id, json!([{"type": "log"}])).await;
    assert_eq!(
        (late.status, late.code().as_str()),
        (StatusCode::CONFLICT, "TASK_ALREADY_TERMINAL")
    );

    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(kinds(&page), ["task_created", "log", "task_cancelled"]);
    assert_eq!(page["closed"], true);
    let status = s.get(&format!("/v1/tasks/{id}"), &ann).await.json()["status"].clone();
    assert_eq!(status["state"], "CANCELLED");
    assert_eq!(status["failure"]["code"], "CANCELLED");
    let head = s
        .call(
            "HEAD",
            &format!("/v1/stream/tasks/{id}"),
            Some(&ann),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(head.header("stream-closed"), Some("true"));
    s.stop().await;
}

async fn event_pages_follow_next_after_without_gaps_and_desc_reads_backwards(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    for batch in 0..5 {
        let events: Vec<Value> = (0..50)
            .map(|i| json!({"type": "agent_turn", "step": "agent", "attempt": 1, "data": {"turn": batch * 50 + i + 1}}))
            .collect();
        let r = s.events(&worker, &id, Value::Array(events)).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    // 1 created + 250 turns, read in pages of 100.
    let mut after = String::new();
    let mut seen = Vec::new();
    loop {
        let q = if after.is_empty() {
            "limit=100".to_string()
        } else {
            format!("limit=100&after={after}")
        };
        let page = s
            .get(&format!("/v1/tasks/{id}/events?{q}"), &ann)
            .await
            .json();
        for e in page["data"].as_array().unwrap() {
            seen.push(e["offset"].as_str().unwrap().to_string());
        }
        after = page["next_after"].as_str().unwrap().to_string();
        if page["has_more"] == false {
            break;
        }
    }
    let expected: Vec<String> = (1..=251)
        .map(|n| format!("0000000000000000_{n:016}"))
        .collect();
    assert_eq!(seen, expected);

    let newest = s
        .get(&format!("/v1/tasks/{id}/events?desc=true&limit=3"), &ann)
        .await
        .json();
    let turns: Vec<u64> = newest["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["turn"].as_u64().unwrap())
        .collect();
    assert_eq!(turns, [250, 249, 248]);
    assert_eq!(newest["has_more"], true);
    let before = newest["next_after"].as_str().unwrap();
    let older = s
        .get(
            &format!("/v1/tasks/{id}/events?desc=true&limit=2&before={before}"),
            &ann,
        )
        .await
        .json();
    let turns: Vec<u64> = older["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["turn"].as_u64().unwrap())
        .collect();
    assert_eq!(turns, [247, 246]);

    let status = s.get(&format!("/v1/tasks/{id}"), &ann).await.json()["status"].clone();
    assert_eq!(status["turns"], 250);

    for bad in [
        "desc=true&after=0000000000000000_0000000000000001",
        "after=banana",
        "after=0000000000000000_0000000000009999",
        "limit=0",
        "limit=1001",
        "view=pretty",
        "live=websocket",
        "colour=red",
    ] {
        let r = s.get(&format!("/v1/tasks/{id}/events?{bad}"), &ann).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{bad}"
        );
    }
    s.stop().await;
}

async fn producer_events_are_checked_stamped_and_stored_as_sent(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let ok = s
        .events(
            &worker,
            &id,
            json!([
                {"type": "brand_new_kind", "data": {"anything": [1, 2, 3]}},
                {"type": "log", "ts": "2026-11-21T10:00:00.000Z", "step": "clone", "attempt": 1}
            ]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(ok.json()["next_after"], "0000000000000000_0000000000000003");
    let page = s
        .get(
            &format!("/v1/tasks/{id}/events?after=0000000000000000_0000000000000001"),
            &ann,
        )
        .await
        .json();
    assert_eq!(page["data"][0]["type"], "brand_new_kind");
    assert_eq!(page["data"][0]["data"]["anything"], json!([1, 2, 3]));
    assert!(
        page["data"][0]["ts"].as_str().unwrap().ends_with('Z'),
        "the server stamps ts"
    );
    assert_eq!(page["data"][1]["ts"], "2026-11-21T10:00:00.000Z");

    for (events, code) in [
        (json!([{"type": "task_completed"}]), "VALIDATION_ERROR"),
        (
            json!([{"type": "stream_rewind", "step": "x", "data": {"new_epoch": 2}}]),
            "VALIDATION_ERROR",
        ),
        (json!([{"data": {}}]), "VALIDATION_ERROR"),
        (json!([{"type": "log", "extra": 1}]), "VALIDATION_ERROR"),
        (
            json!([{"type": "log", "ts": "yesterday"}]),
            "VALIDATION_ERROR",
        ),
        (json!(["just a string"]), "VALIDATION_ERROR"),
        (json!([]), "VALIDATION_ERROR"),
        (
            json!([{"type": "log", "data": {"blob": "x".repeat(1 << 20)}}]),
            "EVENT_TOO_LARGE",
        ),
    ] {
        let r = s.events(&worker, &id, events).await;
        assert_eq!(r.code(), code, "{r:?}");
        let expected = if code == "EVENT_TOO_LARGE" {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status, expected);
    }
    // A refused batch stores nothing, not even its valid events.
    let mixed = s
        .events(
            &worker,
            &id,
            json!([{"type": "log"}, {"type": "task_failed"}]),
        )
        .await;
    assert_eq!(mixed.status, StatusCode::BAD_REQUEST);
    let page = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    s.stop().await;
}

async fn a_retried_producer_batch_is_stored_once(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let body = json!({"events": [{"type": "log", "data": {"line": "once"}}]}).to_string();
    let path = format!("/v1/tasks/{id}/events");
    let headers = [
        ("content-type", "application/json"),
        ("producer-id", "worker-1"),
        ("producer-epoch", "0"),
        ("producer-seq", "0"),
    ];
    let first = s
        .call("POST", &path, Some(&worker), &headers, body.clone())
        .await
        .json();
    let retry = s
        .call("POST", &path, Some(&worker), &headers, body)
        .await
        .json();
    assert_eq!(first["appended"], true);
    assert_eq!(retry["appended"], false);
    assert_eq!(retry["next_after"], first["next_after"]);
    let page = s.get(&path, &ann).await.json();
    assert_eq!(kinds(&page), ["task_created", "log"]);
    s.stop().await;
}

async fn long_poll_answers_when_an_event_arrives_and_empty_at_the_timeout(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    let tail = "0000000000000000_0000000000000001";
    let path = format!("/v1/tasks/{id}/events?live=long-poll&after={tail}");
    let empty = s.get(&path, &ann).await.json();
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["next_after"], tail);

    let waiting = s.get(&path, &ann);
    let append = async {
        // The poll is already waiting or not yet sent; either way it must see this event.
        s.events(&worker, &id, json!([{"type": "log", "data": {"n": 1}}]))
            .await
    };
    let (page, appended) = tokio::join!(waiting, append);
    assert_eq!(appended.status, StatusCode::OK);
    let page = page.json();
    if page["data"].as_array().unwrap().is_empty() {
        // The append landed after this poll timed out: the next poll returns it at once.
        let again = s.get(&path, &ann).await.json();
        assert_eq!(kinds(&again), ["log"]);
    } else {
        assert_eq!(kinds(&page), ["log"]);
    }
    s.stop().await;
}

/// The whole body of an SSE response that ends by itself (the task has ended).
async fn sse_frames(
    s: &Server,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let r = s
        .call("GET", path, Some(token), headers, Bytes::new())
        .await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn sse_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(str::to_string)
        .collect()
}

async fn sse_resumes_strictly_after_last_event_id_and_ends_after_the_terminal_event(
    backend: Backend,
) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    s.events(
        &worker,
        &id,
        json!([{"type": "log"}, {"type": "log"}, {"type": "log"}]),
    )
    .await;
    s.call(
        "DELETE",
        &format!("/v1/tasks/{id}"),
        Some(&ann),
        &[],
        Bytes::new(),
    )
    .await;

    // The task has ended, so each SSE response ends by itself after the terminal event.
    let path = format!("/v1/tasks/{id}/events?live=sse");
    let (status, all) = sse_frames(&s, &path, &ann, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let ids = sse_ids(&all);
    assert_eq!(ids.len(), 5, "{all}");
    assert!(
        all.trim_end().ends_with('}'),
        "the last frame is the terminal event"
    );
    assert!(all.contains("task_cancelled"));

    let resume = [("last-event-id", ids[1].as_str())];
    let (_, rest) = sse_frames(&s, &path, &ann, &resume).await;
    assert_eq!(sse_ids(&rest), ids[2..]);

    // `after` wins over the header.
    let (_, rest) = sse_frames(&s, &format!("{path}&after={}", ids[3]), &ann, &resume).await;
    assert_eq!(sse_ids(&rest), ids[4..]);

    let bad = s
        .call(
            "GET",
            &path,
            Some(&ann),
            &[("last-event-id", "x")],
            Bytes::new(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

async fn task_streams_are_readable_by_durable_streams_clients_and_writable_by_no_one(
    backend: Backend,
) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let id = s.submit(&ann, "d").await;
    let read = s
        .get(&format!("/v1/stream/tasks/{id}?offset=-1"), &ann)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        read.header("stream-next-offset"),
        Some("0000000000000000_0000000000000001")
    );
    assert_eq!(read.json()[0]["type"], "task_created");
    for method in ["POST", "PUT", "DELETE"] {
        let w = s
            .call(
                method,
                &format!("/v1/stream/tasks/{id}"),
                Some(&s.admin),
                &[("content-type", "application/json")],
                "[{}]",
            )
            .await;
        assert_eq!(
            (w.status, w.code().as_str()),
            (StatusCode::FORBIDDEN, "READ_ONLY_STREAM"),
            "{method}"
        );
    }
    // Other streams need a token too.
    let anonymous = s
        .call(
            "PUT",
            "/v1/stream/mine",
            None,
            &[("content-type", "text/plain")],
            "",
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let mine = s
        .call(
            "PUT",
            "/v1/stream/mine",
            Some(&ann),
            &[("content-type", "text/plain")],
            "",
        )
        .await;
    assert_eq!(mine.status, StatusCode::CREATED);
    s.stop().await;
}

async fn export_streams_the_task_then_every_event_as_json_lines(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    s.events(
        &worker,
        &id,
        json!([{"type": "agent_milestone", "data": {"milestone": "tests pass"}}]),
    )
    .await;
    let r = s.get(&format!("/v1/tasks/{id}/export"), &ann).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = String::from_utf8(r.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["task"]["id"], id.as_str());
    assert_eq!(lines[0]["task"]["status"]["last_milestone"], "tests pass");
    assert_eq!(lines[1]["type"], "task_created");
    assert_eq!(lines[2]["offset"], "0000000000000000_0000000000000002");
    s.stop().await;
}

async fn a_status_rebuild_from_the_log_matches_the_incremental_snapshot(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    s.events(&worker, &id, json!([
        {"type": "step_started", "step": "agent", "attempt": 1},
        {"type": "agent_tool_call", "step": "agent", "attempt": 1, "data": {"tool_name": "bash", "tool_input_preview": "cargo test"}},
        {"type": "agent_cost_update", "data": {"total_cost_usd": 0.42, "input_tokens": 1000, "output_tokens": 200}}
    ])).await;
    let before = s.get(&format!("/v1/tasks/{id}"), &ann).await.json()["status"].clone();
    assert_eq!(before["current_activity"], "bash: cargo test");
    assert_eq!(before["cost_usd"], 0.42);
    let rebuilt = s
        .post(
            &format!("/v1/tasks/{id}/status/rebuild"),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(rebuilt.status, StatusCode::OK);
    assert_eq!(rebuilt.json()["unchanged"], true);
    assert_eq!(rebuilt.json()["status"], before);
    let by_user = s
        .post(&format!("/v1/tasks/{id}/status/rebuild"), &ann, json!({}))
        .await;
    assert_eq!(by_user.status, StatusCode::FORBIDDEN);
    s.stop().await;
}

async fn the_task_list_is_newest_first_filters_by_state_and_pages_with_a_cursor(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.submit(&ann, &format!("task {i}")).await);
    }
    s.call(
        "DELETE",
        &format!("/v1/tasks/{}", ids[0]),
        Some(&ann),
        &[],
        Bytes::new(),
    )
    .await;
    let first = s.get("/v1/tasks?limit=2", &ann).await.json();
    let got: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = s
        .get(&format!("/v1/tasks?limit=2&cursor={cursor}"), &ann)
        .await
        .json();
    let got: Vec<&str> = second["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let cancelled = s.get("/v1/tasks?status=cancelled", &ann).await.json();
    assert_eq!(cancelled["data"].as_array().unwrap().len(), 1);
    assert_eq!(cancelled["data"][0]["id"], ids[0].as_str());
    // `q` searches (ignoring case) within the caller's own tasks; blank is no search.
    let bob = s.user("bob", "user").await;
    s.submit(&bob, "task 3 of bob").await;
    let found = s.get("/v1/tasks?q=TASK%203", &ann).await.json();
    assert_eq!(found["data"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["data"][0]["id"], ids[3].as_str());
    let blank = s.get("/v1/tasks?q=%20", &ann).await.json();
    assert_eq!(blank["data"].as_array().unwrap().len(), 5);
    let long = format!("q={}", "x".repeat(201));
    for bad in [
        long.as_str(),
        "status=DONE",
        "limit=0",
        "limit=101",
        "cursor=abc",
        "sort=asc",
    ] {
        let r = s.get(&format!("/v1/tasks?{bad}"), &ann).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    s.stop().await;
}

async fn metrics_and_health_answer_without_a_token_and_count_what_happened(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let id = s.submit(&ann, "d").await;
    s.call(
        "DELETE",
        &format!("/v1/tasks/{id}"),
        Some(&ann),
        &[],
        Bytes::new(),
    )
    .await;
    s.submit(&ann, "e").await;
    let read = s
        .get(&format!("/v1/stream/tasks/{id}?offset=-1"), &ann)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let health = s.call("GET", "/healthz", None, &[], Bytes::new()).await;
    assert_eq!(
        (health.status, health.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let metrics = s.call("GET", "/metrics", None, &[], Bytes::new()).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for line in [
        "tether_tasks{state=\"SUBMITTED\"} 1",
        "tether_tasks{state=\"CANCELLED\"} 1",
        "tether_task_transitions_total{to=\"CANCELLED\"} 1",
        "tether_task_transitions_total{to=\"SUBMITTED\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains(
        "tether_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/tasks\",status=\"201\"} 2"
    ), "{text}");
    assert!(text.contains(
        "tether_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/stream/{*path}\",status=\"200\"} 1"
    ), "{text}");
    s.stop().await;
}

async fn the_timeline_view_and_the_status_leave_out_a_retried_steps_old_attempt(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let worker = s.user("runner", "worker").await;
    let id = s.submit(&ann, "d").await;
    s.events(&worker, &id, json!([
        {"type": "step_started", "step": "agent", "attempt": 1},
        {"type": "agent_turn", "step": "agent", "attempt": 1, "data": {"turn": 5}},
        {"type": "agent_tool_call", "step": "agent", "attempt": 1, "data": {"tool_name": "bash"}},
        {"type": "log", "data": {"line": "no step: never superseded"}}
    ])).await;
    // What beginning attempt 2 of the step will write (the worker API arrives later).
    let rewind = json!({"type": "stream_rewind", "ts": "2026-11-21T10:00:00.000Z", "step": "agent",
                        "data": {"new_epoch": 2, "superseded_after": "0000000000000000_0000000000000001"}});
    let task_id: tether_types::TaskId = id.parse().unwrap();
    s.control
        .append_events(
            &task_id,
            tether_store::EventAppend {
                events: vec![Bytes::from(rewind.to_string())],
                producer: None,
            },
        )
        .await
        .unwrap();
    s.events(
        &worker,
        &id,
        json!([
            {"type": "step_started", "step": "agent", "attempt": 2},
            {"type": "agent_turn", "step": "agent", "attempt": 2, "data": {"turn": 1}}
        ]),
    )
    .await;

    let raw = s.get(&format!("/v1/tasks/{id}/events"), &ann).await.json();
    assert_eq!(
        raw["data"].as_array().unwrap().len(),
        8,
        "the raw log keeps everything"
    );
    let timeline = s
        .get(&format!("/v1/tasks/{id}/events?view=timeline"), &ann)
        .await
        .json();
    assert_eq!(
        kinds(&timeline),
        [
            "task_created",
            "log",
            "stream_rewind",
            "step_started",
            "agent_turn"
        ]
    );
    assert_eq!(timeline["next_after"], raw["next_after"]);
    let status = s.get(&format!("/v1/tasks/{id}"), &ann).await.json()["status"].clone();
    assert_eq!(status["turns"], 1);
    assert_eq!(status["current_activity"], Value::Null);
    let rebuilt = s
        .post(
            &format!("/v1/tasks/{id}/status/rebuild"),
            &s.admin,
            json!({}),
        )
        .await
        .json();
    assert_eq!(rebuilt["unchanged"], true);

    s.call(
        "DELETE",
        &format!("/v1/tasks/{id}"),
        Some(&ann),
        &[],
        Bytes::new(),
    )
    .await;
    let (_, frames) = sse_frames(
        &s,
        &format!("/v1/tasks/{id}/events?live=sse&view=timeline"),
        &ann,
        &[],
    )
    .await;
    assert_eq!(sse_ids(&frames).len(), 6, "{frames}");
    assert!(
        !frames.contains("\"attempt\":1,\"data\":{\"turn\":5}"),
        "{frames}"
    );
    s.stop().await;
}

on_both_backends!(
    a_submitted_task_answers_201_and_starts_its_stream_with_task_created,
    an_idempotency_key_replays_the_original_task_and_refuses_a_different_body,
    bad_task_bodies_get_400_naming_the_problem_and_create_nothing,
    validate_reports_errors_and_warnings_without_creating_anything,
    requests_need_a_valid_token_and_a_role_that_allows_them,
    another_users_task_answers_404_everywhere_as_if_it_did_not_exist,
    admins_list_users_and_every_token_users_list_their_own_and_no_secret_is_shown,
    cancel_appends_one_terminal_event_closes_the_stream_and_a_second_cancel_is_409,
    event_pages_follow_next_after_without_gaps_and_desc_reads_backwards,
    producer_events_are_checked_stamped_and_stored_as_sent,
    a_retried_producer_batch_is_stored_once,
    long_poll_answers_when_an_event_arrives_and_empty_at_the_timeout,
    sse_resumes_strictly_after_last_event_id_and_ends_after_the_terminal_event,
    task_streams_are_readable_by_durable_streams_clients_and_writable_by_no_one,
    export_streams_the_task_then_every_event_as_json_lines,
    a_status_rebuild_from_the_log_matches_the_incremental_snapshot,
    the_task_list_is_newest_first_filters_by_state_and_pages_with_a_cursor,
    metrics_and_health_answer_without_a_token_and_count_what_happened,
    the_timeline_view_and_the_status_leave_out_a_retried_steps_old_attempt,
);
