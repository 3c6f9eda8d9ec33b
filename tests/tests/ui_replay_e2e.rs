//! The controller API requests of three community ZeroTier web UIs, replayed
//! against a real vnet-controller in a lab namespace: ztncui
//! (key-networks/ztncui), ZeroUI (dec0dOS/zero-ui) and ztnet
//! (sinamics/ztnet). Each test sends its UI's sequence with the bodies built
//! exactly as that UI builds them (ztncui's form strings `"true"`, ZeroUI's
//! `"private": 0`, ztnet's `"via": ""`), with its headers (token in
//! `X-ZT1-Auth`, its Host), a real vnet-node asks to join and is authorized
//! with the UI's body, and every response field the UI reads is checked for
//! presence and type.
//!
//! A request that fails is recorded and the replay goes on, so one run names
//! every request vnet does not take; the test fails at the end listing them.
//! The source of each request is named beside it (file and function in the
//! UI's repository).
//!
//! Flow rules: ZeroUI creates every network with its default rules and
//! both rule editors post compiled rules; they are taken (200) and the
//! network answers them back rule for rule (members enforce them:
//! tests/tests/rules_e2e.rs).

use std::fs;
use std::time::Duration;

use serde_json::{Value, json};
use vnet_tests::daemon::{Daemon, PORT, make_planet};
use vnet_tests::netns::{Lab, Node, wait_until};

use Kind::*;

/// How long a member that was told to join may take to be listed, and an
/// authorized one to reach OK.
const JOIN_WAIT: Duration = Duration::from_secs(15);

/// The JSON types a UI relies on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Bool,
    Num,
    Arr,
    Obj,
    StrOrNull,
}

fn is(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string(),
        Kind::Bool => v.is_boolean(),
        Kind::Num => v.is_number(),
        Kind::Arr => v.is_array(),
        Kind::Obj => v.is_object(),
        Kind::StrOrNull => v.is_string() || v.is_null(),
    }
}

/// An HTTP answer: status (0 when curl itself failed) and body (JSON, or
/// the text as a JSON string when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

/// One UI's view of the controller: sends requests as that UI does and
/// collects what went wrong.
struct Ui<'a> {
    name: &'static str,
    lab: &'a Lab,
    ctl: &'a Daemon<'a>,
    token: String,
    /// The Host header the UI's default controller URL gives.
    host: &'static str,
    /// ztnet sends `Content-Type: application/json` on every request.
    json_type_always: bool,
    failures: Vec<String>,
}

impl<'a> Ui<'a> {
    fn new(name: &'static str, ctl: &'a Daemon<'a>, host: &'static str) -> Self {
        let token =
            fs::read_to_string(ctl.home.join("authtoken.secret")).expect("authtoken.secret");
        let mut ui = Ui {
            name,
            lab: ctl.lab,
            ctl,
            token,
            host,
            json_type_always: false,
            failures: Vec::new(),
        };
        // ZeroUI and ztnet read the file raw (no trim) into a header: a
        // newline would make Node refuse every request.
        let raw_ok = !ui.token.is_empty() && ui.token.trim() == ui.token;
        let shape = format!(
            "{} bytes, last {:?}",
            ui.token.len(),
            ui.token.chars().last()
        );
        ui.check("authtoken.secret is usable raw", raw_ok, || shape);
        ui
    }

    /// Sends one request; records nothing.
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let port =
            fs::read_to_string(self.ctl.home.join("vnet.port")).unwrap_or_else(|_| PORT.into());
        let url = format!("http://127.0.0.1:{}{path}", port.trim());
        let auth = format!("X-ZT1-Auth: {}", self.token);
        let host = format!("Host: {}", self.host);
        let text = body.map(Value::to_string);
        let mut args = vec!["-sS", "-X", method, "-H", &auth, "-H", &host];
        if text.is_some() || self.json_type_always {
            args.extend(["-H", "Content-Type: application/json"]);
        }
        if let Some(text) = &text {
            args.extend(["--data-binary", text]);
        }
        args.extend(["-w", "\n%{http_code}", &url]);
        let run = self.lab.exec(self.ctl.host, "curl", &args);
        let (body_text, code) = run.stdout.rsplit_once('\n').unwrap_or(("", ""));
        let status = if run.ok { code.parse().unwrap_or(0) } else { 0 };
        let body = serde_json::from_str(body_text)
            .unwrap_or_else(|_| Value::String(format!("{body_text}{}", run.stderr.trim())));
        eprintln!("{}: {method} {path} -> {status}", self.name);
        Answer { status, body }
    }

    /// Sends a request the UI expects a 200 for; the body, or None (recorded).
    fn call(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<Value> {
        let answer = self.send(method, path, body);
        if answer.status == 200 {
            return Some(answer.body);
        }
        let sent = body.map(|b| format!(" {b}")).unwrap_or_default();
        self.failures.push(format!(
            "{what}: {method} {path}{sent} -> {} {}",
            answer.status, answer.body
        ));
        None
    }

    /// Sends a request with the UIs' default flow rules: taken (200), and
    /// the network's `rules` answer them, rule for rule.
    fn rules_taken(&mut self, what: &str, path: &str, body: &Value) -> Option<Value> {
        let answer = self.call(what, "POST", path, Some(body))?;
        let types = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| r["type"].to_string() + &r["not"].to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let want: Vec<String> = types(&default_rules_of_the_uis())
            .into_iter()
            .map(|t| t.replace("null", "false"))
            .collect();
        let got = types(&answer["rules"]);
        self.check(what, got == want, || {
            format!("rules {got:?}, want {want:?}")
        });
        Some(answer)
    }

    /// The UI's rule editor saves a rules source with a tag and a
    /// capability, compiled as in the browser (ZeroTier's rule-compiler,
    /// whose output vnet's compiler reproduces); `extra` is what the UI
    /// adds to the compiled `config`. Then its member editor grants the tag
    /// and the capability (ZeroUI's `tagChange`/`capChange`, ztnet's member
    /// options). All taken and answered back as posted.
    fn grants_taken(&mut self, what: &str, net: &str, member_path: &str, extra: &Value) {
        let compiled =
            vnet_node::core::rules::compiler::compile(TEAMS_SOURCE).expect("the sample compiles");
        let cli = compiled.to_cli_json();
        let mut body = cli["config"].clone();
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        body["rulesSource"] = json!(TEAMS_SOURCE);
        if let Some(n) = self.post(&format!("{what} rules"), net, &body) {
            let ids = |v: &Value| -> Vec<Value> {
                v.as_array()
                    .map(|a| a.iter().map(|c| c["id"].clone()).collect())
                    .unwrap_or_default()
            };
            self.expect_eq(
                &format!("{what} capabilities"),
                Some(&json!(ids(&n["capabilities"]))),
                &json!(ids(&body["capabilities"])),
            );
            self.expect_eq(&format!("{what} tags"), n.get("tags"), &body["tags"]);
            let rule_count = |v: &Value| v.as_array().map_or(0, Vec::len);
            self.check(
                &format!("{what} rules"),
                rule_count(&n["rules"]) == rule_count(&body["rules"]),
                || format!("rules {} for {}", n["rules"], body["rules"]),
            );
        }
        for (field, value) in [
            ("tags", json!([[1000, 200]])),
            ("capabilities", json!([2000])),
        ] {
            let m = self.post(
                &format!("{what} member {field}"),
                member_path,
                &json!({ field: value }),
            );
            self.expect_eq(
                &format!("{what} member {field}"),
                m.as_ref().and_then(|m| m.get(field)),
                &value,
            );
        }
    }

    fn get(&mut self, what: &str, path: &str) -> Option<Value> {
        self.call(what, "GET", path, None)
    }

    fn post(&mut self, what: &str, path: &str, body: &Value) -> Option<Value> {
        self.call(what, "POST", path, Some(body))
    }

    fn delete(&mut self, what: &str, path: &str) -> Option<Value> {
        self.call(what, "DELETE", path, None)
    }

    fn check(&mut self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(format!("{what}: {}", detail()));
        }
    }

    /// Each JSON pointer present in `v` with its kind.
    fn fields(&mut self, what: &str, v: &Value, fields: &[(&str, Kind)]) {
        for (ptr, kind) in fields {
            match v.pointer(ptr) {
                None => self.failures.push(format!("{what}: {ptr} missing in {v}")),
                Some(x) if !is(*kind, x) => self
                    .failures
                    .push(format!("{what}: {ptr} is {x}, expected {kind:?}")),
                Some(_) => {}
            }
        }
    }

    /// `fields` for every element of the array at `ptr`.
    fn each(&mut self, what: &str, v: &Value, ptr: &str, fields: &[(&str, Kind)]) {
        let items = v.pointer(ptr).and_then(Value::as_array).cloned();
        for (i, item) in items.unwrap_or_default().iter().enumerate() {
            self.fields(&format!("{what} {ptr}[{i}]"), item, fields);
        }
    }

    fn expect_eq(&mut self, what: &str, got: Option<&Value>, want: &Value) {
        if got != Some(want) {
            self.failures
                .push(format!("{what}: got {got:?}, expected {want}"));
        }
    }

    /// Polls the member list (as the UIs refresh it) until `addr` is in it.
    fn wait_listed(&mut self, nwid: &str, addr: &str) -> bool {
        let path = format!("/controller/network/{nwid}/member");
        let listed = wait_until(JOIN_WAIT, || {
            let a = self.send("GET", &path, None);
            a.status == 200 && a.body.get(addr).is_some()
        });
        self.check("member that asked to join is listed", listed, || {
            format!("{addr} not in {path} after {JOIN_WAIT:?}")
        });
        listed
    }

    /// Checks that the member node reaches `status` on `nwid` (the UI's
    /// change took effect on the wire, not only in the controller's record).
    fn wait_member_status(&mut self, member: &Daemon, nwid: &str, status: &str) {
        // Daemon::status counts columns, which a name with a space shifts.
        let ok = wait_until(JOIN_WAIT, || {
            member.network_line(nwid).iter().any(|f| f == status)
        });
        self.check(&format!("member reaches {status}"), ok, || {
            format!("listnetworks: {:?}", member.network_line(nwid))
        });
    }

    /// Checks that the member node comes to hold `ip` (its line's last
    /// column: `addr/len,addr/len`).
    fn wait_member_ip(&mut self, member: &Daemon, nwid: &str, ip: &str) {
        let holds = |line: Vec<String>| {
            line.last()
                .is_some_and(|a| a.split(',').any(|a| a.split('/').next() == Some(ip)))
        };
        let ok = wait_until(JOIN_WAIT, || holds(member.network_line(nwid)));
        self.check(&format!("member is given {ip}"), ok, || {
            format!("listnetworks: {:?}", member.network_line(nwid))
        });
    }

    /// Ends the replay with what was found on the way and `why`.
    fn abort(mut self, why: &str) -> ! {
        self.failures.push(format!("replay stopped: {why}"));
        self.finish();
        unreachable!("finish panics when something failed")
    }

    /// Fails the test listing every request that went wrong.
    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{}: {} request(s) or field(s) not as the UI needs:\n  - {}\ncontroller log:\n{}",
            self.name,
            self.failures.len(),
            self.failures.join("\n  - "),
            self.ctl.proc().stderr_text()
        );
    }
}

/// A root, a controller and one member node, all online.
fn start<'a>(lab: &'a Lab, hosts: &'a [Node; 3]) -> [Daemon<'a>; 3] {
    let [root_host, ctl_host, member_host] = hosts;
    make_planet(lab, root_host, &[lab.home(ctl_host), lab.home(member_host)]);
    let root = Daemon::start(lab, root_host, "vnet-planet");
    let ctl = Daemon::start(lab, ctl_host, "vnet-controller");
    let member = Daemon::start(lab, member_host, "vnet-node");
    ctl.wait_online();
    member.wait_online();
    [root, ctl, member]
}

fn hosts(lab: &Lab) -> [Node; 3] {
    [lab.host("root"), lab.host("ctl"), lab.host("m1")]
}

/// The flow rules ZeroUI creates every network with and both ZeroUI and
/// ztnet compile from their default rules source: drop what is not IPv4,
/// ARP or IPv6 (zero-ui `backend/utils/constants.js defaultRules`).
fn default_rules_of_the_uis() -> Value {
    json!([
        {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 2048},
        {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 2054},
        {"type": "MATCH_ETHERTYPE", "not": true, "or": false, "etherType": 34525},
        {"type": "ACTION_DROP"},
        {"type": "ACTION_ACCEPT"}
    ])
}

/// A rules source with a tag and a capability, as a UI's editor holds it.
const TEAMS_SOURCE: &str = "tag department\n  id 1000\n  enum 100 sales\n  enum 200 engineering\n;\n\
cap superuser\n  id 2000\n  accept ipprotocol tcp and dport 22;\n;\n\
drop not tdiff department 0;\nbreak ipprotocol tcp and dport 22;\naccept;\n";

/// The address in GET /status (all three UIs build the create path from it).
fn controller_address(ui: &mut Ui, what: &str) -> Option<String> {
    let status = ui.get(what, "/status")?;
    ui.fields(what, &status, &[("/address", Str)]);
    status["address"].as_str().map(String::from)
}

/// The ids in GET /controller/network.
fn network_ids(ui: &mut Ui, what: &str) -> Vec<String> {
    let list = ui.get(what, "/controller/network").unwrap_or_default();
    ui.check(what, list.is_array(), || format!("not an array: {list}"));
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `list` with elements whose `key` equals `value` removed (the UIs' filter).
fn without(list: &Value, key: &str, value: &str) -> Value {
    Value::Array(
        list.as_array()
            .map(|a| a.iter().filter(|x| x[key] != value).cloned().collect())
            .unwrap_or_default(),
    )
}

/// `list` with `item` appended (the UIs' push onto what they last read).
fn with(list: &Value, item: Value) -> Value {
    let mut items = list.as_array().cloned().unwrap_or_default();
    items.push(item);
    Value::Array(items)
}

#[test]
fn ztncui_requests_work_unchanged() {
    let lab = Lab::new();
    let hosts = hosts(&lab);
    let [_root, ctl, member] = start(&lab, &hosts);
    // ZT_ADDR defaults to localhost:9993 (src/controllers/zt.js).
    let mut ui = Ui::new("ztncui", &ctl, "localhost:9993");

    // Network fields the pages read (network_detail.pug, network_prop_*.pug).
    let network_fields = [
        ("/nwid", Str),
        ("/name", Str),
        ("/private", Bool),
        ("/v4AssignMode/zt", Bool),
        ("/v6AssignMode/6plane", Bool),
        ("/v6AssignMode/rfc4193", Bool),
        ("/v6AssignMode/zt", Bool),
        ("/routes", Arr),
        ("/ipAssignmentPools", Arr),
    ];
    let route_fields = [("/target", Str), ("/via", StrOrNull)];
    let pool_fields = [("/ipRangeStart", Str), ("/ipRangeEnd", Str)];

    // network_create_post -> zt.network_create: GET /status, then POST the name.
    let Some(address) = controller_address(&mut ui, "get_zt_address") else {
        ui.abort("no controller address")
    };
    let create = format!("/controller/network/{address}______");
    let created = ui.post("network_create", &create, &json!({"name": "ztncui-net"}));
    let Some(created) = created else {
        ui.abort("network not created")
    };
    ui.fields("network_create", &created, &[("/nwid", Str)]);
    let Some(nwid) = created["nwid"].as_str().map(String::from) else {
        ui.abort("no nwid in the created network")
    };
    let net = format!("/controller/network/{nwid}");
    let members = format!("{net}/member");

    // network_list: the ids, then each network's name and nwid.
    let ids = network_ids(&mut ui, "network_list");
    ui.check("network_list", ids.contains(&nwid), || format!("{ids:?}"));
    for id in &ids {
        if let Some(n) = ui.get("network_list detail", &format!("/controller/network/{id}")) {
            ui.fields("network_list detail", &n, &[("/name", Str), ("/nwid", Str)]);
        }
    }

    // network_detail page: get_network_with_members and the ZT address.
    if let Some(n) = ui.get("network_detail", &net) {
        ui.fields("network_detail", &n, &network_fields);
    }
    if let Some(p) = ui.get("peers", "/peer") {
        ui.check("peers", p.is_array(), || format!("not an array: {p}"));
    }
    if let Some(m) = ui.get("members", &members) {
        ui.fields("members", &m, &[("", Obj)]);
    }

    // name: {name} from the rename form.
    let renamed = json!({"name": "ztncui renamed"});
    ui.post("name", &net, &renamed);
    let got = ui
        .get("network_detail after rename", &net)
        .unwrap_or_default();
    ui.expect_eq("rename", got.get("name"), &json!("ztncui renamed"));

    // easy_post -> network_easy_setup: the one body with a JSON boolean.
    let easy = json!({
        "ipAssignmentPools": [{"ipRangeStart": "10.147.20.10", "ipRangeEnd": "10.147.20.100"}],
        "routes": [{"target": "10.147.20.0/24", "via": null}],
        "v4AssignMode": {"zt": true}
    });
    if let Some(n) = ui.post("network_easy_setup", &net, &easy) {
        ui.fields("network_easy_setup", &n, &network_fields);
        ui.each("network_easy_setup", &n, "/routes", &route_fields);
        ui.each("network_easy_setup", &n, "/ipAssignmentPools", &pool_fields);
    }

    // zt.routes(add): the routes as read, plus the form's route.
    let n = ui.get("routes add: read", &net).unwrap_or_default();
    let routes = with(
        &n["routes"],
        json!({"target": "192.168.100.0/24", "via": "10.147.20.1"}),
    );
    if let Some(n) = ui.post("routes add", &net, &json!({ "routes": routes })) {
        ui.fields("routes add", &n, &[("/nwid", Str), ("/routes/1/via", Str)]);
        ui.each("routes add", &n, "/routes", &route_fields);
    }
    // route_delete -> zt.routes(delete): filtered by target.
    let n = ui.get("routes delete: read", &net).unwrap_or_default();
    let routes = without(&n["routes"], "target", "192.168.100.0/24");
    if let Some(n) = ui.post("routes delete", &net, &json!({ "routes": routes })) {
        let left = n["routes"].as_array().map(Vec::len);
        ui.check("routes delete", left == Some(1), || format!("{n}"));
    }

    // zt.ipAssignmentPools(add / delete).
    let n = ui
        .get("ipAssignmentPools add: read", &net)
        .unwrap_or_default();
    let pools = with(
        &n["ipAssignmentPools"],
        json!({"ipRangeStart": "10.147.20.150", "ipRangeEnd": "10.147.20.160"}),
    );
    if let Some(n) = ui.post(
        "ipAssignmentPools add",
        &net,
        &json!({ "ipAssignmentPools": pools }),
    ) {
        ui.each(
            "ipAssignmentPools add",
            &n,
            "/ipAssignmentPools",
            &pool_fields,
        );
    }
    let n = ui
        .get("ipAssignmentPool_delete: read", &net)
        .unwrap_or_default();
    let pools = without(&n["ipAssignmentPools"], "ipRangeStart", "10.147.20.150");
    if let Some(n) = ui.post(
        "ipAssignmentPool_delete",
        &net,
        &json!({ "ipAssignmentPools": pools }),
    ) {
        let left = n["ipAssignmentPools"].as_array().map(Vec::len);
        ui.check("ipAssignmentPool_delete", left == Some(1), || {
            format!("{n}")
        });
    }

    // private: $.post of the checkbox state arrives as a form string.
    for (text, want) in [("false", false), ("true", true)] {
        let n = ui.post("private", &net, &json!({ "private": text }));
        let n = n.unwrap_or_default();
        ui.expect_eq(&format!("private {text:?}"), n.get("private"), &json!(want));
    }
    // v4AssignMode: the form's radio value, a string.
    for (text, want) in [("false", false), ("true", true)] {
        let body = json!({"v4AssignMode": {"zt": text}});
        let n = ui.post("v4AssignMode", &net, &body).unwrap_or_default();
        ui.expect_eq(
            &format!("v4AssignMode.zt {text:?}"),
            n.pointer("/v4AssignMode/zt"),
            &json!(want),
        );
    }
    // v6AssignMode: all three checkboxes posted, as strings.
    let v6 = json!({"v6AssignMode": {"6plane": "false", "rfc4193": "true", "zt": "false"}});
    if let Some(n) = ui.post("v6AssignMode", &net, &v6) {
        ui.expect_eq(
            "v6AssignMode rfc4193 \"true\"",
            n.pointer("/v6AssignMode/rfc4193"),
            &json!(true),
        );
        ui.expect_eq(
            "v6AssignMode 6plane \"false\"",
            n.pointer("/v6AssignMode/6plane"),
            &json!(false),
        );
    }
    // dns: domain and the textarea's servers.
    let dns = json!({"dns": {"domain": "ztncui.lan", "servers": ["10.147.20.1"]}});
    if let Some(n) = ui.post("dns", &net, &dns) {
        ui.fields("dns", &n, &[("/dns/domain", Str), ("/dns/servers", Arr)]);
    }

    // A member asks to join; the detail page lists it (ids, each member, peers).
    let addr = member.address();
    let run = member.cli(&["join", &nwid]);
    assert!(run.ok, "{run:?}");
    if !ui.wait_listed(&nwid, &addr) {
        ui.abort("the member never appeared")
    }
    let member_path = format!("{members}/{addr}");
    let member_fields = [
        ("/id", Str),
        ("/address", Str),
        ("/authorized", Bool),
        ("/activeBridge", Bool),
        ("/ipAssignments", Arr),
    ];
    if let Some(m) = ui.get("member_detail (asking)", &member_path) {
        ui.fields("member_detail (asking)", &m, &member_fields);
        ui.expect_eq("asking member", m.get("authorized"), &json!(false));
    }

    // members POST {id, auth: this.checked}: authorized as a string.
    ui.post(
        "members auth true",
        &member_path,
        &json!({"authorized": "true"}),
    );
    let m = ui
        .get("member after auth", &member_path)
        .unwrap_or_default();
    ui.expect_eq("authorized \"true\"", m.get("authorized"), &json!(true));
    ui.wait_member_status(&member, &nwid, "OK");
    let m = ui
        .get("member after auth", &member_path)
        .unwrap_or_default();
    let auto = m["ipAssignments"].as_array().cloned().unwrap_or_default();
    ui.check("an address from the pool", !auto.is_empty(), || {
        format!("{m}")
    });

    // The peer columns: GET /peer (list) and GET /peer/<id> (member page).
    let peer_fields = [
        ("/address", Str),
        ("/latency", Num),
        ("/version", Str),
        ("/paths", Arr),
    ];
    let path_fields = [("/preferred", Bool), ("/address", Str)];
    let peers = ui.get("peers", "/peer").unwrap_or_default();
    let peer = peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["address"] == addr.as_str()))
        .cloned();
    ui.check("peers lists the member", peer.is_some(), || {
        format!("{peers}")
    });
    if let Some(p) = peer {
        ui.fields("peers", &p, &peer_fields);
        ui.each("peers", &p, "/paths", &path_fields);
    }
    // zt.peer treats 404 as "no peer".
    let one = ui.send("GET", &format!("/peer/{addr}"), None);
    ui.check("peer", [200, 404].contains(&one.status), || {
        format!("{one:?}")
    });
    if one.status == 200 {
        ui.fields("peer", &one.body, &peer_fields);
    }

    // members POST {id, activeBridge: this.checked}.
    for (text, want) in [("true", true), ("false", false)] {
        let body = json!({ "activeBridge": text });
        ui.post("members activeBridge", &member_path, &body);
        let m = ui.get("member", &member_path).unwrap_or_default();
        ui.expect_eq(
            &format!("activeBridge {text:?}"),
            m.get("activeBridge"),
            &json!(want),
        );
    }

    // assign_ip -> ipAssignmentAdd: the list as read, plus the form's address.
    let m = ui
        .get("ipAssignmentAdd: read", &member_path)
        .unwrap_or_default();
    let ips = with(&m["ipAssignments"], json!("10.147.20.99"));
    if let Some(m) = ui.post(
        "ipAssignmentAdd",
        &member_path,
        &json!({ "ipAssignments": ips }),
    ) {
        ui.fields(
            "ipAssignmentAdd",
            &m,
            &[("/id", Str), ("/ipAssignments", Arr)],
        );
    }
    ui.wait_member_ip(&member, &nwid, "10.147.20.99");
    // delete_ip -> ipAssignmentDelete: spliced at the clicked index.
    let m = ui
        .get("ipAssignmentDelete: read", &member_path)
        .unwrap_or_default();
    let ips: Vec<Value> = m["ipAssignments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|ip| *ip != "10.147.20.99")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(m) = ui.post(
        "ipAssignmentDelete",
        &member_path,
        &json!({ "ipAssignments": ips }),
    ) {
        ui.fields("ipAssignmentDelete", &m, &[("/id", Str)]);
    }

    // Unchecking the box: "false".
    ui.post(
        "members auth false",
        &member_path,
        &json!({"authorized": "false"}),
    );
    let m = ui
        .get("member after deauth", &member_path)
        .unwrap_or_default();
    ui.expect_eq("authorized \"false\"", m.get("authorized"), &json!(false));

    // member_delete: the delete page reads network and member, then DELETE;
    // the answer's id names the local record to drop.
    ui.get("member_delete page", &net);
    ui.get("member_delete page", &member_path);
    if let Some(m) = ui.delete("member_delete", &member_path) {
        ui.fields("member_delete", &m, &[("/id", Str)]);
    }

    // network_delete_post: page read, DELETE; the answer is rendered.
    ui.get("network_delete page", &net);
    if let Some(n) = ui.delete("network_delete", &net) {
        ui.fields("network_delete", &n, &[("", Obj)]);
    }
    let gone = ui.send("GET", &net, None);
    ui.check("deleted network", gone.status == 404, || {
        format!("{gone:?}")
    });
    let ids = network_ids(&mut ui, "network_list after delete");
    ui.check("network_list after delete", !ids.contains(&nwid), || {
        format!("{ids:?}")
    });
    ui.finish();
}

#[test]
fn zero_ui_requests_work_unchanged() {
    let lab = Lab::new();
    let hosts = hosts(&lab);
    let [_root, ctl, member] = start(&lab, &hosts);
    // ZU_CONTROLLER_ENDPOINT defaults to http://localhost:9993/.
    let mut ui = Ui::new("ZeroUI", &ctl, "localhost:9993");

    // What the frontend reads of a network's config (NetworkSettings.jsx,
    // NetworkRules.jsx spreads rules/capabilities/tags, NetworkButton.jsx).
    let network_fields = [
        ("/id", Str),
        ("/name", Str),
        ("/private", Bool),
        ("/routes", Arr),
        ("/ipAssignmentPools", Arr),
        ("/multicastLimit", Num),
        ("/enableBroadcast", Bool),
        ("/rules", Arr),
        ("/capabilities", Arr),
        ("/tags", Arr),
    ];
    // What NetworkMembers.jsx, ManagedIP.jsx, MemberSettings.jsx, Tag.jsx read.
    let member_fields = [
        ("/id", Str),
        ("/nwid", Str),
        ("/address", Str),
        ("/authorized", Bool),
        ("/ipAssignments", Arr),
        ("/vMajor", Num),
        ("/vMinor", Num),
        ("/vRev", Num),
        ("/activeBridge", Bool),
        ("/noAutoAssignIps", Bool),
        ("/capabilities", Arr),
        ("/tags", Arr),
    ];

    // backend/utils/zt-address.js getZTAddress.
    let Some(address) = controller_address(&mut ui, "getZTAddress") else {
        ui.abort("no controller address")
    };

    // routes/network.js POST "/": generateNetworkConfig().config + defaultRules.
    let body = json!({
        "name": "new-net-53721",
        "private": true,
        "v6AssignMode": {"rfc4193": false, "6plane": false, "zt": false},
        "v4AssignMode": {"zt": true},
        "routes": [{"target": "172.30.77.0/24", "via": null, "flags": 0, "metric": 0}],
        "ipAssignmentPools": [{"ipRangeStart": "172.30.77.1", "ipRangeEnd": "172.30.77.254"}],
        "enableBroadcast": true,
    });
    let create = format!("/controller/network/{address}______");
    // ZeroUI creates every network with its default rules: kept and
    // enforced (IPv4, ARP and IPv6 pass; anything else is dropped).
    let mut with_rules = body.clone();
    with_rules["rules"] = default_rules_of_the_uis();
    let Some(created) = ui.rules_taken("create network", &create, &with_rules) else {
        ui.abort("network not created")
    };
    ui.fields("create network", &created, &[("/id", Str)]);
    let Some(nwid) = created["id"].as_str().map(String::from) else {
        ui.abort("no id in the created network")
    };
    let net = format!("/controller/network/{nwid}");
    let members = format!("{net}/member");

    // routes/network.js GET "/": ids, then getNetworksData.
    let ids = network_ids(&mut ui, "get all networks");
    ui.check("get all networks", ids.contains(&nwid), || {
        format!("{ids:?}")
    });
    if let Some(n) = ui.get("getNetworksData", &net) {
        ui.fields("getNetworksData", &n, &network_fields);
        ui.each(
            "getNetworksData",
            &n,
            "/ipAssignmentPools",
            &[("/ipRangeStart", Str), ("/ipRangeEnd", Str)],
        );
        ui.each(
            "getNetworksData",
            &n,
            "/routes",
            &[("/target", Str), ("/via", StrOrNull)],
        );
    }

    // NetworkSettings.jsx handleChange: one key per change, then a re-GET.
    ui.post("name", &net, &json!({"name": "zero-ui renamed"}));
    let n = ui.get("getNetworksData", &net).unwrap_or_default();
    ui.expect_eq("name", n.get("name"), &json!("zero-ui renamed"));
    // <option value={1}/{0}> through JSON.parse: numbers.
    for (number, want) in [(0, false), (1, true)] {
        ui.post("private", &net, &json!({ "private": number }));
        let n = ui.get("getNetworksData", &net).unwrap_or_default();
        ui.expect_eq(&format!("private {number}"), n.get("private"), &json!(want));
    }

    // IPv4AutoAssign.jsx setDefaultPool("10.147.17.*"): pools, then a route
    // without "via".
    let pool = json!({"ipAssignmentPools": [{"ipRangeStart": "10.147.17.1", "ipRangeEnd": "10.147.17.254"}]});
    ui.post("setDefaultPool pools", &net, &pool);
    let routes = json!({"routes": [{"target": "10.147.17.0/24"}]});
    ui.post("setDefaultPool routes", &net, &routes);
    let n = ui.get("getNetworksData", &net).unwrap_or_default();
    ui.expect_eq(
        "route without via",
        n.get("routes"),
        &json!([{"target": "10.147.17.0/24", "via": null}]),
    );

    // ManagedRoutes.jsx addRouteReq / removeRouteReq on the routes as read.
    let routes = with(
        &n["routes"],
        json!({"target": "192.168.60.0/24", "via": "10.147.17.1"}),
    );
    ui.post("addRouteReq", &net, &json!({ "routes": routes }));
    let n = ui.get("getNetworksData", &net).unwrap_or_default();
    let count = n["routes"].as_array().map(Vec::len);
    ui.check("addRouteReq", count == Some(2), || format!("{n}"));
    let routes = without(&n["routes"], "target", "192.168.60.0/24");
    ui.post("removeRouteReq", &net, &json!({ "routes": routes }));

    // Multicast limit ("json" mode: a number) and broadcast (a checkbox).
    ui.post("multicastLimit", &net, &json!({"multicastLimit": 64}));
    ui.post("enableBroadcast", &net, &json!({"enableBroadcast": false}));
    let n = ui.get("getNetworksData", &net).unwrap_or_default();
    ui.expect_eq("multicastLimit", n.get("multicastLimit"), &json!(64));
    ui.expect_eq("enableBroadcast", n.get("enableBroadcast"), &json!(false));
    ui.post("enableBroadcast", &net, &json!({"enableBroadcast": true}));

    // NetworkRules.jsx saveChanges with the default rules source compiled.
    let flow = json!({"rules": default_rules_of_the_uis(), "capabilities": [], "tags": []});
    ui.rules_taken("NetworkRules saveChanges", &net, &flow);

    // A member asks to join: routes/member.js GET "/" and getMembersData.
    let addr = member.address();
    let run = member.cli(&["join", &nwid]);
    assert!(run.ok, "{run:?}");
    if !ui.wait_listed(&nwid, &addr) {
        ui.abort("the member never appeared")
    }
    let member_path = format!("{members}/{addr}");
    if let Some(m) = ui.get("getMembersData (asking)", &member_path) {
        ui.fields("getMembersData (asking)", &m, &member_fields);
        ui.expect_eq("asking member", m.get("authorized"), &json!(false));
    }

    // NetworkMembers.jsx authorized checkbox: a JSON boolean.
    ui.post("authorize", &member_path, &json!({"authorized": true}));
    let m = ui.get("getMembersData", &member_path).unwrap_or_default();
    ui.fields("getMembersData", &m, &member_fields);
    ui.expect_eq("authorized true", m.get("authorized"), &json!(true));
    ui.wait_member_status(&member, &nwid, "OK");

    // services/member.js getPeer (errors ignored, so only a 200 is read).
    let peer = ui.send("GET", &format!("/peer/{addr}"), None);
    if peer.status == 200 {
        ui.fields(
            "getPeer",
            &peer.body,
            &[("/latency", Num), ("/version", Str), ("/paths", Arr)],
        );
        ui.each(
            "getPeer",
            &peer.body,
            "/paths",
            &[
                ("/active", Bool),
                ("/expired", Bool),
                ("/preferred", Bool),
                ("/lastReceive", Num),
                ("/address", Str),
            ],
        );
    } else {
        ui.check("getPeer", false, || format!("{peer:?}"));
    }

    // ManagedIP.jsx arrayAdd / arrayDel on the member's list as read.
    let m = ui.get("getMembersData", &member_path).unwrap_or_default();
    let ips = with(&m["ipAssignments"], json!("10.147.17.50"));
    ui.post(
        "ManagedIP add",
        &member_path,
        &json!({ "ipAssignments": ips }),
    );
    ui.wait_member_ip(&member, &nwid, "10.147.17.50");
    let m = ui.get("getMembersData", &member_path).unwrap_or_default();
    let ips: Vec<Value> = m["ipAssignments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|ip| *ip != "10.147.17.50")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    ui.post(
        "ManagedIP del",
        &member_path,
        &json!({ "ipAssignments": ips }),
    );

    // MemberSettings.jsx checkboxes.
    for (key, value) in [
        ("activeBridge", true),
        ("noAutoAssignIps", true),
        ("noAutoAssignIps", false),
        ("activeBridge", false),
    ] {
        ui.post(key, &member_path, &json!({ key: value }));
        let m = ui.get("getMembersData", &member_path).unwrap_or_default();
        ui.expect_eq(&format!("{key} {value}"), m.get(key), &json!(value));
    }

    // AddMember.jsx: {config: {authorized: true}} for an address never seen.
    let manual = format!("{members}/a1b2c3d4e5");
    if let Some(m) = ui.post("AddMember", &manual, &json!({"authorized": true})) {
        ui.fields("AddMember", &m, &member_fields);
    }
    let list = ui.get("get all members", &members).unwrap_or_default();
    ui.check(
        "manually added member listed",
        list.get("a1b2c3d4e5").is_some(),
        || format!("{list}"),
    );

    // NetworkRules.jsx with tags and a capability; Tag.jsx and the
    // capability boxes of MemberSettings.jsx.
    ui.grants_taken("ZeroUI", &net, &member_path, &json!({}));

    // Unchecking the box.
    ui.post("deauthorize", &member_path, &json!({"authorized": false}));
    let m = ui.get("getMembersData", &member_path).unwrap_or_default();
    ui.expect_eq("authorized false", m.get("authorized"), &json!(false));

    // routes/member.js DELETE: DELETE, then the #859 reset POST whose status
    // the UI gets.
    ui.delete("delete member", &member_path);
    let reset = json!({"authorized": false, "ipAssignments": [], "capabilities": [], "tags": []});
    ui.post("delete member reset", &member_path, &reset);

    // routes/network.js DELETE.
    ui.delete("delete network", &net);
    let gone = ui.send("GET", &net, None);
    ui.check("deleted network", gone.status == 404, || {
        format!("{gone:?}")
    });
    ui.finish();
}

#[test]
fn ztnet_requests_work_unchanged() {
    let lab = Lab::new();
    let hosts = hosts(&lab);
    let [_root, ctl, member] = start(&lab, &hosts);
    // localControllerUrl outside docker: http://127.0.0.1:9993.
    let mut ui = Ui::new("ztnet", &ctl, "127.0.0.1:9993");
    ui.json_type_always = true;

    // What ztnet reads of a network (networkRouter getNetworkById, the
    // networkByIdPage components).
    let network_fields = [
        ("/nwid", Str),
        ("/name", Str),
        ("/private", Bool),
        ("/routes", Arr),
        ("/ipAssignmentPools", Arr),
        ("/v4AssignMode/zt", Bool),
        ("/v6AssignMode/zt", Bool),
        ("/v6AssignMode/rfc4193", Bool),
        ("/v6AssignMode/6plane", Bool),
        ("/dns/domain", Str),
        ("/dns/servers", Arr),
        ("/multicastLimit", Num),
        ("/enableBroadcast", Bool),
        ("/mtu", Num),
    ];
    // memberService reconcile caches the member whole (types/ztController.ts).
    let member_fields = [
        ("/id", Str),
        ("/address", Str),
        ("/nwid", Str),
        ("/authorized", Bool),
        ("/activeBridge", Bool),
        ("/noAutoAssignIps", Bool),
        ("/ipAssignments", Arr),
        ("/name", Str),
        ("/revision", Num),
        ("/vMajor", Num),
        ("/vMinor", Num),
        ("/vRev", Num),
        ("/vProto", Num),
        ("/tags", Arr),
        ("/capabilities", Arr),
        ("/creationTime", Num),
        ("/lastAuthorizedTime", Num),
    ];

    // ztApi get_controller_version.
    if let Some(c) = ui.get("get_controller_version", "/controller") {
        let fields = [("/controller", Bool), ("/apiVersion", Num), ("/clock", Num)];
        ui.fields("get_controller_version", &c, &fields);
    }
    // ztApi network_create: get_controller_status, then name + private +
    // IPv4gen(null), cidrOptions included.
    let status = ui
        .get("get_controller_status", "/status")
        .unwrap_or_default();
    let fields = [("/address", Str), ("/version", Str), ("/online", Bool)];
    ui.fields("get_controller_status", &status, &fields);
    let Some(address) = status["address"].as_str().map(String::from) else {
        ui.abort("no controller address")
    };
    let body = json!({
        "name": "gentle-wombat",
        "private": true,
        "ipAssignmentPools": [{"ipRangeStart": "10.121.15.1", "ipRangeEnd": "10.121.15.254"}],
        "routes": [{"target": "10.121.15.0/24", "via": null}],
        "v4AssignMode": {"zt": true},
        "cidrOptions": [
            "10.121.15.0/24", "10.121.16.0/24", "10.121.17.0/24", "10.121.18.0/24",
            "172.25.25.0/24", "172.25.26.0/24", "172.25.27.0/24", "172.25.28.0/24"
        ]
    });
    let create = format!("/controller/network/{address}______");
    let Some(created) = ui.post("network_create", &create, &body) else {
        ui.abort("network not created")
    };
    ui.fields(
        "network_create",
        &created,
        &[("/name", Str), ("/nwid", Str), ("/routes/0/target", Str)],
    );
    let Some(nwid) = created["nwid"].as_str().map(String::from) else {
        ui.abort("no nwid in the created network")
    };
    let net = format!("/controller/network/{nwid}");
    let members = format!("{net}/member");

    // getNetworkById -> local_network_detail: member map, network, members;
    // admin stats list the ids.
    let ids = network_ids(&mut ui, "get_controller_networks");
    ui.check("get_controller_networks", ids.contains(&nwid), || {
        format!("{ids:?}")
    });
    if let Some(m) = ui.get("network_members", &members) {
        ui.fields("network_members", &m, &[("", Obj)]);
    }
    if let Some(n) = ui.get("local_network_detail", &net) {
        ui.fields("local_network_detail", &n, &network_fields);
    }
    // The bulk lists vnet serves for ztnet and ZeroUI (see the notes: not
    // found in the UIs' stored sources).
    if let Some(all) = ui.get("unstable networks", "/unstable/controller/network") {
        ui.fields(
            "unstable networks",
            &all,
            &[("/data", Arr), ("/meta/networkCount", Num)],
        );
        let mine = all["data"]
            .as_array()
            .and_then(|d| d.iter().find(|n| n["id"] == nwid.as_str()))
            .cloned();
        ui.check("unstable networks lists it", mine.is_some(), || {
            format!("{all}")
        });
        if let Some(n) = mine {
            ui.fields("unstable networks", &n, &network_fields);
            let counts = [
                ("/meta/totalMemberCount", Num),
                ("/meta/authorizedMemberCount", Num),
            ];
            ui.fields("unstable networks", &n, &counts);
        }
    }

    // networkRouter mutations, one body each.
    let n = ui.post("networkName", &net, &json!({"name": "ztnet renamed"}));
    ui.expect_eq(
        "networkName",
        n.as_ref().and_then(|n| n.get("name")),
        &json!("ztnet renamed"),
    );
    for want in [false, true] {
        let n = ui.post("privatePublicNetwork", &net, &json!({ "private": want }));
        let got = n.as_ref().and_then(|n| n.get("private"));
        ui.expect_eq("privatePublicNetwork", got, &json!(want));
    }
    // easyIpAssignment: IPv4gen(cidr) without cidrOptions.
    let easy = json!({
        "ipAssignmentPools": [{"ipRangeStart": "10.121.16.1", "ipRangeEnd": "10.121.16.254"}],
        "routes": [{"target": "10.121.16.0/24", "via": null}],
        "v4AssignMode": {"zt": true}
    });
    let n = ui.post("easyIpAssignment", &net, &easy).unwrap_or_default();
    // managedRoutes: the network's routes plus the form's, "via" left "".
    let routes = with(
        &with(
            &n["routes"],
            json!({"target": "192.168.70.0/24", "via": ""}),
        ),
        json!({"target": "192.168.71.0/24", "via": "10.121.16.1"}),
    );
    if let Some(n) = ui.post("managedRoutes", &net, &json!({ "routes": routes })) {
        ui.each(
            "managedRoutes",
            &n,
            "/routes",
            &[("/target", Str), ("/via", StrOrNull)],
        );
        let lan = n["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["target"] == "192.168.70.0/24"))
            .cloned();
        ui.expect_eq(
            "\"via\": \"\" is a LAN route",
            lan.as_ref().and_then(|r| r.get("via")),
            &Value::Null,
        );
    }
    let pools = json!({"ipAssignmentPools": [{"ipRangeStart": "10.121.16.10", "ipRangeEnd": "10.121.16.200"}]});
    ui.post("advancedIpAssignment", &net, &pools);
    for zt in [false, true] {
        let body = json!({"v4AssignMode": { "zt": zt }});
        let n = ui.post("enableIpv4AutoAssign", &net, &body);
        let got = n.as_ref().and_then(|n| n.pointer("/v4AssignMode/zt"));
        ui.expect_eq("enableIpv4AutoAssign", got, &json!(zt));
    }
    // ipv6: get_network, then its v6AssignMode with the box changed.
    let n = ui.get("get_network", &net).unwrap_or_default();
    let mut v6 = n["v6AssignMode"].clone();
    v6["rfc4193"] = json!(true);
    if let Some(n) = ui.post("ipv6", &net, &json!({ "v6AssignMode": v6 })) {
        ui.expect_eq(
            "ipv6 rfc4193",
            n.pointer("/v6AssignMode/rfc4193"),
            &json!(true),
        );
    }
    let multicast = json!({"multicastLimit": 32, "enableBroadcast": true});
    ui.post("multiCast", &net, &multicast);
    // dns: set (domain + servers), then clearDns.
    let dns = json!({"dns": {"domain": "home.arpa", "servers": ["10.121.16.53"]}});
    if let Some(n) = ui.post("dns", &net, &dns) {
        ui.expect_eq("dns", n.get("dns"), &dns["dns"]);
    }
    let clear = json!({"dns": {"domain": "", "servers": []}});
    ui.post("dns clearDns", &net, &clear);
    // setFlowRule with the default rules source compiled.
    let flow = json!({
        "rules": default_rules_of_the_uis(),
        "capabilities": [],
        "tags": [],
        "capabilitiesByName": {},
        "tagsByName": {},
        "rulesSource": "#"
    });
    ui.rules_taken("setFlowRule", &net, &flow);

    // A member asks to join; the reconcile reads the revision map, the
    // changed members and the peers.
    let addr = member.address();
    let run = member.cli(&["join", &nwid]);
    assert!(run.ok, "{run:?}");
    if !ui.wait_listed(&nwid, &addr) {
        ui.abort("the member never appeared")
    }
    let member_path = format!("{members}/{addr}");
    let revision = |ui: &mut Ui| {
        let map = ui.get("network_members", &members).unwrap_or_default();
        map.get(&addr).and_then(Value::as_u64)
    };
    let asked = revision(&mut ui);
    ui.check("revision in network_members", asked.is_some(), || {
        format!("no number for {addr}")
    });
    if let Some(m) = ui.get("member_details (asking)", &member_path) {
        ui.fields("member_details (asking)", &m, &member_fields);
    }
    if let Some(list) = ui.get("unstable members", &format!("/unstable{members}")) {
        let counts = [
            ("/data", Arr),
            ("/meta/totalCount", Num),
            ("/meta/authorizedCount", Num),
        ];
        ui.fields("unstable members", &list, &counts);
        ui.each("unstable members", &list, "/data", &member_fields);
    }

    // memberRouter Update: only the changed key, JSON types.
    let m = ui.post(
        "Update authorized",
        &member_path,
        &json!({"authorized": true}),
    );
    if let Some(m) = m {
        ui.fields("Update authorized", &m, &member_fields);
        ui.expect_eq("authorized true", m.get("authorized"), &json!(true));
    }
    // The delta sync refetches a member only when its revision moved.
    let authorized = revision(&mut ui);
    ui.check("revision moves on a change", authorized > asked, || {
        format!("{asked:?} -> {authorized:?}")
    });
    ui.wait_member_status(&member, &nwid, "OK");
    let peers = ui.get("peers", "/peer").unwrap_or_default();
    let peer = peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["address"] == addr.as_str()))
        .cloned();
    ui.check("peers lists the member", peer.is_some(), || {
        format!("{peers}")
    });
    if let Some(p) = peer {
        ui.fields(
            "peers",
            &p,
            &[("/address", Str), ("/latency", Num), ("/paths", Arr)],
        );
        let path_fields = [
            ("/active", Bool),
            ("/preferred", Bool),
            ("/expired", Bool),
            ("/address", Str),
        ];
        ui.each("peers", &p, "/paths", &path_fields);
    }

    let m = ui.post("Update name", &member_path, &json!({"name": "laptop"}));
    ui.expect_eq(
        "Update name",
        m.as_ref().and_then(|m| m.get("name")),
        &json!("laptop"),
    );
    let ips = json!({"ipAssignments": ["10.121.16.20"]});
    let m = ui.post("Update ipAssignments", &member_path, &ips);
    ui.expect_eq(
        "Update ipAssignments",
        m.as_ref().and_then(|m| m.get("ipAssignments")),
        &json!(["10.121.16.20"]),
    );
    ui.wait_member_ip(&member, &nwid, "10.121.16.20");
    for (key, value) in [("activeBridge", true), ("noAutoAssignIps", false)] {
        let m = ui.post(
            &format!("Update {key}"),
            &member_path,
            &json!({ key: value }),
        );
        let got = m.as_ref().and_then(|m| m.get(key));
        ui.expect_eq(&format!("Update {key}"), got, &json!(value));
    }
    let m = ui.post(
        "Update deauthorize",
        &member_path,
        &json!({"authorized": false}),
    );
    ui.expect_eq(
        "authorized false",
        m.as_ref().and_then(|m| m.get("authorized")),
        &json!(false),
    );

    // setFlowRule with tags and a capability, then the member's.
    let by_name = json!({"capabilitiesByName": {"superuser": 2000},
                         "tagsByName": {"department": {"id": 1000}}});
    ui.grants_taken("ztnet", &net, &member_path, &by_name);

    // stash, then delete.
    let stash = json!({"authorized": false, "ipAssignments": [], "tags": [], "capabilities": []});
    ui.post("stash", &member_path, &stash);
    ui.delete("member_delete", &member_path);

    // deleteNetwork: deauthorize every listed member, then DELETE.
    let map = ui
        .get("deleteNetwork members", &members)
        .unwrap_or_default();
    let listed: Vec<String> = map
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for id in listed {
        let body = json!({"authorized": false});
        ui.post(
            "deleteNetwork deauthorize",
            &format!("{members}/{id}"),
            &body,
        );
    }
    ui.delete("network_delete", &net);
    let gone = ui.send("GET", &net, None);
    ui.check("deleted network", gone.status == 404, || {
        format!("{gone:?}")
    });
    ui.finish();
}
