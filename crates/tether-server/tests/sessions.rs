//! Browser sessions over HTTP: a login code works once, a pasted token signs in, the cookie
//! acts as its token, a change made with it needs the server's own `Origin`, and signing
//! out, revoking the token or the session's expiry ends it. Bearer tokens work as before.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use bytes::Bytes;
use chrono::Utc;
use hyper::StatusCode;
use serde_json::{json, Value};
use support::{on_both_backends, Backend, Reply, Server};

const JSON: (&str, &str) = ("content-type", "application/json");

/// Signs in with a body (`{"token"}` or `{"code"}`) and returns the `Cookie` header value.
async fn sign_in(s: &Server, body: Value) -> String {
    let made = s
        .call("POST", "/v1/sessions", None, &[JSON], body.to_string())
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let set = made.header("set-cookie").expect("a Set-Cookie").to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    set.split(';').next().unwrap().to_string()
}

/// A request with the session cookie and, when given, an `Origin`.
async fn with_cookie(
    s: &Server,
    method: &str,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut headers = vec![("cookie", cookie)];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    let body = match body {
        Some(b) => {
            headers.push(JSON);
            b.to_string()
        }
        None => String::new(),
    };
    s.call(method, path, None, &headers, body).await
}

async fn state_of(s: &Server, id: &str) -> String {
    let task = s.get(&format!("/v1/tasks/{id}"), &s.admin).await;
    task.json()["state"].as_str().unwrap().to_string()
}

async fn counts(s: &Server) -> (usize, usize) {
    let tasks = s.get("/v1/tasks?limit=100", &s.admin).await.json();
    let tokens = s.get("/v1/tokens", &s.admin).await.json();
    (
        tasks["data"].as_array().unwrap().len(),
        tokens["data"].as_array().unwrap().len(),
    )
}

async fn a_session_changes_nothing_without_the_servers_own_origin(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let id = s.submit(&ann, "mine").await;
    let ann_cookie = sign_in(&s, json!({ "token": ann })).await;
    let admin_cookie = sign_in(&s, json!({ "token": s.admin })).await;
    let before = counts(&s).await;
    let nudge = format!("/v1/tasks/{id}/nudges");
    let task = format!("/v1/tasks/{id}");
    let changes: [(&str, &str, &str, Option<Value>); 4] = [
        (
            "POST",
            "/v1/tasks",
            &ann_cookie,
            Some(json!({"description": "x"})),
        ),
        ("POST", &nudge, &ann_cookie, Some(json!({"message": "hi"}))),
        ("DELETE", &task, &ann_cookie, None),
        (
            "POST",
            "/v1/tokens",
            &admin_cookie,
            Some(json!({"user": "ann", "role": "admin"})),
        ),
    ];
    for origin in [None, Some("http://evil.example"), Some("null")] {
        for (method, path, cookie, body) in &changes {
            let r = with_cookie(&s, method, path, cookie, origin, body.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path} {origin:?}: {r:?}"
            );
            assert_eq!(r.code(), "SESSION_ORIGIN_REFUSED");
        }
    }
    assert_eq!(counts(&s).await, before, "a refused change left something");
    assert_eq!(state_of(&s, &id).await, "SUBMITTED");

    // From the server's own pages, each works.
    let own = Some(s.base.as_str());
    let expected = [
        StatusCode::CREATED,
        StatusCode::ACCEPTED,
        StatusCode::OK,
        StatusCode::CREATED,
    ];
    for ((method, path, cookie, body), status) in changes.iter().zip(expected) {
        let r = with_cookie(&s, method, path, cookie, own, body.clone()).await;
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
    }
    assert_eq!(state_of(&s, &id).await, "CANCELLED");
    assert_eq!(counts(&s).await, (before.0 + 1, before.1 + 1));
    s.stop().await;
}

async fn a_session_reads_as_its_token_and_sees_only_what_it_may(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let bob = s.user("bob", "user").await;
    let anns = s.submit(&ann, "ann's").await;
    let bobs = s.submit(&bob, "bob's").await;
    let cookie = sign_in(&s, json!({ "token": ann })).await;

    let who = with_cookie(&s, "GET", "/v1/whoami", &cookie, None, None).await;
    assert_eq!(who.json(), json!({"user": "ann", "role": "user"}));
    let list = with_cookie(&s, "GET", "/v1/tasks", &cookie, None, None).await;
    let ids: Vec<_> = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![anns.clone()]);
    let hidden = with_cookie(&s, "GET", &format!("/v1/tasks/{bobs}"), &cookie, None, None).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let export = format!("/v1/tasks/{anns}/export");
    let exported = with_cookie(&s, "GET", &export, &cookie, None, None).await;
    assert_eq!(exported.status, StatusCode::OK, "{exported:?}");
    assert!(String::from_utf8_lossy(&exported.body).contains("task_created"));
    s.stop().await;
}

async fn a_login_code_signs_in_once_and_opening_the_link_spends_nothing(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let minted = s.post("/v1/login-codes", &ann, json!({})).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{minted:?}");
    let minted = minted.json();
    let code = minted["code"].as_str().unwrap().to_string();
    let url = minted["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/login?code={code}", s.base));
    assert!(minted["expires_at"].is_string());

    // A GET of the link (a prefetch, a preview) is only the page.
    let page = s
        .call(
            "GET",
            &format!("/login?code={code}"),
            None,
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("set-cookie").is_none());

    let cookie = sign_in(&s, json!({ "code": code })).await;
    let who = with_cookie(&s, "GET", "/v1/whoami", &cookie, None, None).await;
    assert_eq!(who.json()["user"], "ann");

    let again = s
        .call(
            "POST",
            "/v1/sessions",
            None,
            &[JSON],
            json!({ "code": code }).to_string(),
        )
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{again:?}");
    assert_eq!(again.code(), "LOGIN_CODE_INVALID");
    assert!(again.header("set-cookie").is_none());

    let wrong = s
        .call(
            "POST",
            "/v1/sessions",
            None,
            &[JSON],
            json!({"token": "tether_x_y"}).to_string(),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let both = json!({"token": ann, "code": "c"}).to_string();
    let both = s.call("POST", "/v1/sessions", None, &[JSON], both).await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    let anonymous = s.call("POST", "/v1/login-codes", None, &[JSON], "{}").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

async fn signing_out_revoking_or_expiry_ends_a_session(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let whoami = |cookie: String| {
        let s = &s;
        async move {
            with_cookie(s, "GET", "/v1/whoami", &cookie, None, None)
                .await
                .status
        }
    };

    let cookie = sign_in(&s, json!({ "token": ann })).await;
    let refused = with_cookie(&s, "POST", "/v1/sessions/logout", &cookie, None, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    assert_eq!(whoami(cookie.clone()).await, StatusCode::OK);
    let own = Some(s.base.as_str());
    let out = with_cookie(&s, "POST", "/v1/sessions/logout", &cookie, own, None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{out:?}");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(whoami(cookie).await, StatusCode::UNAUTHORIZED);

    // An expired session: stored as the server stores one, already past its end.
    let secret = "an-expired-session-secret";
    let token_id = ann.split('_').nth(1).unwrap().to_string();
    let now = Utc::now();
    s.control
        .create_session(tether_store::NewSecret {
            hash: tether_server::auth::hash(secret),
            token_id,
            now: now - chrono::Duration::hours(13),
            expires_at: now - chrono::Duration::hours(1),
        })
        .await
        .unwrap();
    assert_eq!(
        whoami(format!("tether_session={secret}")).await,
        StatusCode::UNAUTHORIZED
    );

    // Revoking the token ends its live session at once.
    let cookie = sign_in(&s, json!({ "token": ann })).await;
    assert_eq!(whoami(cookie.clone()).await, StatusCode::OK);
    let revoked = s
        .call(
            "DELETE",
            &format!("/v1/tokens/{}", ann.split('_').nth(1).unwrap()),
            Some(&s.admin),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = with_cookie(&s, "GET", "/v1/whoami", &cookie, None, None).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.code(), "UNAUTHORIZED");
    s.stop().await;
}

async fn bearer_tokens_work_as_before_and_win_over_a_cookie(backend: Backend) {
    let s = Server::start_on(backend).await;
    let ann = s.user("ann", "user").await;
    let bob = s.user("bob", "user").await;
    let cookie = sign_in(&s, json!({ "token": ann })).await;
    // No Origin, or a foreign one: a bearer request is not a browser's ambient credential.
    for origin in [None, Some("http://evil.example")] {
        let mut headers = vec![JSON];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let body = json!({"description": "by bearer"}).to_string();
        let made = s
            .call("POST", "/v1/tasks", Some(&bob), &headers, body)
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    }
    // With a bearer, the cookie does not count: bob's token decides, as bob.
    let who = s
        .call(
            "GET",
            "/v1/whoami",
            Some(&bob),
            &[("cookie", &cookie)],
            Bytes::new(),
        )
        .await;
    assert_eq!(who.json()["user"], "bob");
    let bad = s
        .call(
            "GET",
            "/v1/whoami",
            Some("tether_no_pe"),
            &[("cookie", &cookie)],
            Bytes::new(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

on_both_backends!(
    a_session_changes_nothing_without_the_servers_own_origin,
    a_session_reads_as_its_token_and_sees_only_what_it_may,
    a_login_code_signs_in_once_and_opening_the_link_spends_nothing,
    signing_out_revoking_or_expiry_ends_a_session,
    bearer_tokens_work_as_before_and_win_over_a_cookie,
);
