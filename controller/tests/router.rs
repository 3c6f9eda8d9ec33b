//! The REST API, called in-process through the axum router.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;
use vnet_controller::Controller;
use vnet_controller::api::router;

const CONTROLLER: &str = "8056c2e21c";
const MEMBER: &str = "a1b2c3d4e5";

fn app_with(controller: Controller) -> (Router, Arc<Mutex<Controller>>) {
    let shared = Arc::new(Mutex::new(controller));
    (router(shared.clone()), shared)
}

fn app() -> Router {
    app_with(Controller::in_memory(CONTROLLER.parse().unwrap())).0
}

async fn call(app: &Router, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

async fn get(app: &Router, path: &str) -> (StatusCode, Value) {
    call(app, "GET", path, None).await
}

async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", path, Some(&body.to_string())).await
}

async fn delete(app: &Router, path: &str) -> (StatusCode, Value) {
    call(app, "DELETE", path, None).await
}

async fn create(app: &Router, body: Value) -> String {
    let (status, net) = post(
        app,
        &format!("/controller/network/{CONTROLLER}______"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{net}");
    net["id"].as_str().unwrap().to_string()
}

fn error(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {v}"))
}

#[tokio::test]
async fn status_answers() {
    let (status, v) = get(&app(), "/controller").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["controller"], true);
    assert_eq!(v["apiVersion"], 4);
    assert!(v["clock"].as_u64().unwrap() > 1_600_000_000_000);
}

#[tokio::test]
async fn networks_create_list_show_set_delete() {
    let app = app();
    assert_eq!(
        get(&app, "/controller/network").await,
        (StatusCode::OK, json!([]))
    );

    let nwid = create(
        &app,
        json!({"name": "office", "ipAssignmentPools": [{"ipRangeStart": "10.9.0.1", "ipRangeEnd": "10.9.0.50"}],
               "routes": [{"target": "10.9.0.0/24", "via": null}]}),
    )
    .await;
    assert!(nwid.starts_with(CONTROLLER) && nwid.len() == 16, "{nwid}");
    // An empty body creates a network with the defaults.
    let (status, bare) = call(
        &app,
        "POST",
        &format!("/controller/network/{CONTROLLER}______"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bare["private"], true);
    assert_eq!(bare["mtu"], 2800);

    let (status, list) = get(&app, "/controller/network").await;
    assert_eq!(status, StatusCode::OK);
    let mut expected = vec![nwid.clone(), bare["id"].as_str().unwrap().to_string()];
    expected.sort();
    assert_eq!(list, json!(expected));

    let (status, net) = get(&app, &format!("/controller/network/{nwid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(net["id"], json!(nwid));
    assert_eq!(net["nwid"], json!(nwid));
    assert_eq!(net["name"], "office");
    assert_eq!(net["revision"], 1);
    assert_eq!(net["multicastLimit"], 32);
    assert_eq!(net["enableBroadcast"], true);
    assert_eq!(net["v4AssignMode"], json!({"zt": true}));
    assert_eq!(
        net["routes"],
        json!([{"target": "10.9.0.0/24", "via": null}])
    );
    assert_eq!(
        net["ipAssignmentPools"],
        json!([{"ipRangeStart": "10.9.0.1", "ipRangeEnd": "10.9.0.50"}])
    );

    // A partial update changes only what it names.
    let (status, net) = post(
        &app,
        &format!("/controller/network/{nwid}"),
        json!({"mtu": 1500, "private": false, "unknownThing": {"x": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{net}");
    assert_eq!(
        (net["mtu"].clone(), net["private"].clone()),
        (json!(1500), json!(false))
    );
    assert_eq!(net["name"], "office");
    assert_eq!(net["revision"], 2);

    // POST to an unused id of this controller creates it (as ZeroTier does).
    let chosen = format!("{CONTROLLER}00beef");
    let (status, net) = post(
        &app,
        &format!("/controller/network/{chosen}"),
        json!({"name": "chosen"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(net["id"], json!(chosen));

    let (status, gone) = delete(&app, &format!("/controller/network/{nwid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gone["id"], json!(nwid));
    let (status, v) = get(&app, &format!("/controller/network/{nwid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&v), format!("network {nwid} not found"));
    assert_eq!(
        delete(&app, &format!("/controller/network/{nwid}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn members_list_show_authorize_set_delete() {
    let app = app();
    let nwid = create(
        &app,
        json!({"ipAssignmentPools": [{"ipRangeStart": "10.9.0.1", "ipRangeEnd": "10.9.0.2"}],
               "routes": [{"target": "10.9.0.0/24"}]}),
    )
    .await;
    let members = format!("/controller/network/{nwid}/member");
    assert_eq!(get(&app, &members).await, (StatusCode::OK, json!({})));

    // POSTing an unknown member records it (unauthorized by default).
    let one = format!("{members}/{MEMBER}");
    let (status, m) = post(&app, &one, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["id"], MEMBER);
    assert_eq!(m["address"], MEMBER);
    assert_eq!(m["nwid"], json!(nwid));
    assert_eq!(m["authorized"], false);
    assert_eq!(m["activeBridge"], false);
    assert_eq!(m["noAutoAssignIps"], false);
    assert_eq!(m["ipAssignments"], json!([]));
    assert_eq!(m["revision"], 1);
    assert_eq!(m["lastAuthorizedTime"], 0);
    assert_eq!(m["ipAssignmentError"], Value::Null);

    // Authorizing assigns the lowest free pool address.
    let (status, m) = post(&app, &one, json!({"authorized": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["ipAssignments"], json!(["10.9.0.1"]));
    assert!(m["lastAuthorizedTime"].as_u64().unwrap() > 0);
    assert_eq!(m["revision"], 2);

    // Set by hand.
    let (status, m) = post(
        &app,
        &one,
        json!({"activeBridge": true, "ipAssignments": ["10.9.0.77", "fd00::1"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["ipAssignments"], json!(["10.9.0.77", "fd00::1"]));
    assert_eq!(m["activeBridge"], true);

    // Two more: one gets the pool's other addresses, the last finds none and is told why.
    let two = format!("{members}/0102030405");
    let three = format!("{members}/0102030406");
    let four = format!("{members}/0102030407");
    assert_eq!(
        post(&app, &two, json!({"authorized": true})).await.1["ipAssignments"],
        json!(["10.9.0.1"])
    );
    assert_eq!(
        post(&app, &three, json!({"authorized": true})).await.1["ipAssignments"],
        json!(["10.9.0.2"])
    );
    let (status, m) = post(&app, &four, json!({"authorized": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["ipAssignments"], json!([]));
    assert_eq!(
        m["ipAssignmentError"],
        "every usable address in the IPv4 ipAssignmentPools is already assigned"
    );
    assert_eq!(
        get(&app, &four).await.1["ipAssignmentError"],
        m["ipAssignmentError"]
    );

    // The list maps addresses to revisions.
    let (status, list) = get(&app, &members).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list,
        json!({MEMBER: 3, "0102030405": 1, "0102030406": 1, "0102030407": 1})
    );

    // Show, then delete.
    let (status, m) = get(&app, &one).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["activeBridge"], true);
    let (status, m) = delete(&app, &one).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["address"], MEMBER);
    let (status, v) = get(&app, &one).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        error(&v),
        format!("member {MEMBER} of network {nwid} not found")
    );
    assert_eq!(delete(&app, &one).await.0, StatusCode::NOT_FOUND);

    // Deleting the network deletes its members.
    delete(&app, &format!("/controller/network/{nwid}")).await;
    assert_eq!(get(&app, &two).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &members).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_name_the_field_and_change_nothing() {
    let app = app();
    let nwid = create(&app, json!({"name": "keep"})).await;
    let path = format!("/controller/network/{nwid}");
    let cases = [
        (
            json!({"name": "changed", "ipAssignmentPools": [
                {"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.2"},
                {"ipRangeStart": "10.0.0.9", "ipRangeEnd": "10.0.0.5"}]}),
            "ipAssignmentPools[1].ipRangeEnd: 10.0.0.5 is before ipRangeStart 10.0.0.9",
        ),
        (
            json!({"name": "changed", "mtu": 70000}),
            "mtu: expected an integer from 1280 to 10000, got 70000",
        ),
        (
            json!({"routes": [{"target": "10.0.0.1/8"}]}),
            "routes[0].target: 10.0.0.1/8 has host bits set (the network is 10.0.0.0/8)",
        ),
        (
            json!({"private": ["no"]}),
            "private: expected true or false, got [\"no\"]",
        ),
        (
            json!(["not", "an", "object"]),
            "body: expected a JSON object, got [\"not\",\"an\",\"object\"]",
        ),
    ];
    for (body, message) in cases {
        let (status, v) = post(&app, &path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error(&v), message);
    }
    let (status, v) = call(&app, "POST", &path, Some("{\"name\": ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&v).starts_with("body is not JSON: "), "{v}");
    let (_, net) = get(&app, &path).await;
    assert_eq!(
        (net["name"].clone(), net["revision"].clone()),
        (json!("keep"), json!(1))
    );
    assert_eq!(net["ipAssignmentPools"], json!([]));

    // A refused create creates nothing.
    let (status, v) = post(
        &app,
        &format!("/controller/network/{CONTROLLER}______"),
        json!({"mtu": true}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&v),
        "mtu: expected an integer from 1280 to 10000, got true"
    );
    assert_eq!(get(&app, "/controller/network").await.1, json!([nwid]));

    // Members.
    let member = format!("{path}/member/{MEMBER}");
    let (status, v) = post(&app, &member, json!({"ipAssignments": ["10.0.0.300"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&v),
        "ipAssignments[0]: \"10.0.0.300\" is not an IPv4 or IPv6 address"
    );
    assert_eq!(
        get(&app, &member).await.0,
        StatusCode::NOT_FOUND,
        "nothing recorded"
    );
    post(&app, &member, json!({"ipAssignments": ["10.0.0.1"]})).await;
    let (status, v) = post(
        &app,
        &format!("{path}/member/0102030405"),
        json!({"authorized": true, "ipAssignments": ["10.0.0.1"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&v),
        format!("ipAssignments[0]: 10.0.0.1 is already assigned to member {MEMBER}")
    );
    let (status, v) = post(&app, &member, json!({"authorized": null})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&v), "authorized: expected true or false, got null");

    // Bad ids.
    let (status, v) = get(&app, "/controller/network/nothex").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&v).starts_with("bad network id \"nothex\""), "{v}");
    let (status, v) = get(&app, &format!("{path}/member/xyz")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&v).starts_with("bad member address \"xyz\""), "{v}");
    let (status, v) = post(&app, "/controller/network/0102030405______", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&v),
        format!("cannot create networks for controller 0102030405: this one is {CONTROLLER}")
    );
    let (status, v) = post(&app, "/controller/network/0102030405000001", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&v).contains("belongs to controller 0102030405"),
        "{v}"
    );
    let (status, v) = post(&app, "/controller/network/zz________", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // Unknown network for members: 404.
    let other = format!("/controller/network/{CONTROLLER}abcdef");
    assert_eq!(
        get(&app, &format!("{other}/member")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, &format!("{other}/member/{MEMBER}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&app, &format!("{other}/member/{MEMBER}"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete(&app, &format!("{other}/member/{MEMBER}")).await.0,
        StatusCode::NOT_FOUND
    );

    // Unsupported method: 405 with a JSON error.
    let (status, v) = call(&app, "PATCH", &path, Some("{}")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error(&v), "method not allowed");
}

#[tokio::test]
async fn changes_are_on_disk_when_the_answer_comes() {
    let home = tempfile::tempdir().unwrap();
    let address = CONTROLLER.parse().unwrap();
    let (app, _) = app_with(Controller::open(address, home.path()).unwrap());
    let nwid = create(&app, json!({"name": "durable"})).await;
    post(
        &app,
        &format!("/controller/network/{nwid}/member/{MEMBER}"),
        json!({"authorized": true}),
    )
    .await;
    // A second controller loading the same home sees both changes.
    let (again, _) = app_with(Controller::open(address, home.path()).unwrap());
    assert_eq!(
        get(&again, &format!("/controller/network/{nwid}")).await.1["name"],
        "durable"
    );
    let (status, m) = get(
        &again,
        &format!("/controller/network/{nwid}/member/{MEMBER}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["authorized"], true);
    // Deleting removes the files.
    delete(&app, &format!("/controller/network/{nwid}")).await;
    let dir = home.path().join("controller.d/network");
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
}

#[tokio::test]
async fn merges_into_a_router_with_its_own_state_and_layers() {
    // The node merges these routes into its own router, then layers its
    // token check over all of them.
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    #[derive(Clone)]
    struct NodeState;
    async fn guard(request: axum::extract::Request, next: Next) -> Response {
        if request.headers().contains_key("x-vnet-auth") {
            next.run(request).await
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
    let shared = Arc::new(Mutex::new(Controller::in_memory(
        CONTROLLER.parse().unwrap(),
    )));
    let node: Router = Router::<NodeState>::new()
        .route("/status", axum::routing::get(|| async { "ok" }))
        .merge(router(shared))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn(guard))
        .with_state(NodeState);
    let unauthorized = node
        .clone()
        .oneshot(Request::get("/controller").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let ok = node
        .clone()
        .oneshot(
            Request::get("/controller")
                .header("x-vnet-auth", "t")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let missing = node
        .clone()
        .oneshot(
            Request::get("/controller/nothing")
                .header("x-vnet-auth", "t")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The method fallback of the controller's routes survives the merge.
    let put = node
        .oneshot(
            Request::patch("/controller/network")
                .header("x-vnet-auth", "t")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn unauthorized_requesters_are_shown_like_members_until_an_admin_acts() {
    let home = tempfile::tempdir().unwrap();
    let controller = Controller::open(CONTROLLER.parse().unwrap(), home.path()).unwrap();
    let (app, shared) = app_with(controller);
    let nwid = create(&app, json!({"name": "lab"})).await;
    let id = nwid.parse().unwrap();
    let member_file = home
        .path()
        .join(format!("controller.d/network/{nwid}/member/{MEMBER}.json"));
    for (i, addr) in [MEMBER, "0102030405"].into_iter().enumerate() {
        let denied = shared.lock().unwrap().request_config(
            1_000 + i as u64,
            id,
            addr.parse().unwrap(),
            None,
        );
        assert_eq!(denied, Err(vnet_controller::ConfigDenied::AccessDenied));
    }
    let (status, list) = get(&app, &format!("/controller/network/{nwid}/member")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({MEMBER: 0, "0102030405": 0}));
    let (status, m) = get(&app, &format!("/controller/network/{nwid}/member/{MEMBER}")).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(
        (
            &m["authorized"],
            &m["creationTime"],
            &m["ipAssignmentError"]
        ),
        (&json!(false), &json!(1_000), &Value::Null)
    );
    assert!(!member_file.exists(), "in memory only");
    let (_, c) = get(&app, "/controller").await;
    assert_eq!(c["unauthorizedRequesters"], 2, "{c}");
    assert_eq!(c["counters"]["requestersEvicted"], 0, "{c}");

    // Authorizing stores it; deleting the other forgets it.
    let (status, m) = post(
        &app,
        &format!("/controller/network/{nwid}/member/{MEMBER}"),
        json!({"authorized": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(
        (&m["authorized"], &m["revision"]),
        (&json!(true), &json!(1))
    );
    assert!(member_file.exists());
    let (status, _) = delete(
        &app,
        &format!("/controller/network/{nwid}/member/0102030405"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = get(&app, &format!("/controller/network/{nwid}/member")).await;
    assert_eq!(list, json!({MEMBER: 1}));
    let (_, c) = get(&app, "/controller").await;
    assert_eq!(c["unauthorizedRequesters"], 0, "{c}");
}

/// What ZeroTier's web UIs send: `PUT` as `POST` (ZeroUI, ztnet), booleans
/// as strings (ztncui) and numbers (ZeroUI), an empty route `via` (ztnet).
#[tokio::test]
async fn requests_shaped_like_zerotier_uis_are_taken() {
    let app = app();
    let nwid = create(&app, json!({})).await;
    let net = format!("/controller/network/{nwid}");
    let (status, n) = call(
        &app,
        "PUT",
        &net,
        Some(r#"{"private": 0, "routes": [{"target": "10.9.0.0/24", "via": ""}]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{n}");
    assert_eq!(n["private"], false);
    assert_eq!(n["routes"], json!([{"target": "10.9.0.0/24", "via": null}]));
    let one = format!("{net}/member/{MEMBER}");
    let (status, m) = call(&app, "PUT", &one, Some(r#"{"authorized": "true"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["authorized"], true);
    let (status, m) = post(&app, &one, json!({"authorized": "false"})).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["authorized"], false);
}

/// ZeroTier's newer paths: `POST /controller/network` makes a network with
/// a random number; the `/unstable` lists give every network and member in
/// full with counts (ZeroUI and ztnet read them).
#[tokio::test]
async fn random_networks_and_the_unstable_lists_are_served() {
    let app = app();
    let (status, n) = call(
        &app,
        "POST",
        "/controller/network",
        Some(r#"{"name": "a"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{n}");
    let nwid = n["id"].as_str().expect("id").to_string();
    assert_eq!(n["name"], "a");
    let (status, other) = call(&app, "PUT", "/controller/network", None).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_ne!(other["id"], n["id"], "a second random network");
    let net = format!("/controller/network/{nwid}");
    let (status, _) = post(
        &app,
        &format!("{net}/member/{MEMBER}"),
        json!({"authorized": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        &app,
        &format!("{net}/member/0102030405"),
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, all) = get(&app, "/unstable/controller/network").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["meta"]["networkCount"], 2, "{all}");
    let listed = all["data"]
        .as_array()
        .and_then(|d| d.iter().find(|x| x["id"] == nwid.as_str()))
        .unwrap_or_else(|| panic!("{nwid} not listed: {all}"));
    assert_eq!(listed["name"], "a");
    assert_eq!(
        listed["meta"],
        json!({"totalMemberCount": 2, "authorizedMemberCount": 1})
    );

    let (status, members) = get(&app, &format!("/unstable{net}/member")).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert_eq!(
        members["meta"],
        json!({"totalCount": 2, "authorizedCount": 1})
    );
    let data = members["data"].as_array().expect("data");
    let one = data.iter().find(|m| m["id"] == MEMBER).expect("member");
    assert_eq!(one["authorized"], true);
    assert_eq!(one["nwid"], nwid.as_str());
    assert!(
        data.iter()
            .any(|m| m["name"] == "x" && m["authorized"] == false)
    );

    let (status, _) = get(&app, "/unstable/controller/network/8056c2e21c000099/member").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
