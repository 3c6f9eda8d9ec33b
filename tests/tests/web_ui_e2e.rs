//! The controller's web UI in a real browser (Debian's headless chromium
//! through chromedriver), in network namespaces: sign in with the token,
//! create a network, see a member that asked to join, authorize it with a
//! click, and watch it go ONLINE. Also: the page's Content-Security-Policy,
//! no token in any URL, and the Host check in front of the UI too.
//!
//! `VNET_SCREENSHOT=<file.png>` keeps a screenshot of the final page (the
//! README's picture comes from there).

use std::fs;
use std::time::Duration;

use vnet_tests::daemon::{Daemon, PORT, make_planet};
use vnet_tests::netns::{Lab, wait_until};
use vnet_tests::webdriver::Browser;

#[test]
fn sign_in_create_a_network_authorize_a_member_and_see_it_online() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let m1_host = lab.host("m1");
    make_planet(&lab, &root_host, &[lab.home(&ctl_host), lab.home(&m1_host)]);
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let m1 = Daemon::start(&lab, &m1_host, "vnet-node");
    ctl.wait_online();
    m1.wait_online();
    let token = fs::read_to_string(lab.home(&ctl_host).join("authtoken.secret")).expect("token");
    let base = format!("http://127.0.0.1:{PORT}/ui/");

    // The page's headers: a strict policy, no framing, no sniffing.
    let head = lab.exec(&ctl_host, "curl", &["-sI", &base]);
    let headers = head.stdout.to_ascii_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{head:?}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{headers}"
    );
    assert!(
        headers.contains("x-frame-options: deny")
            && headers.contains("x-content-type-options: nosniff")
    );
    // A page reached under another name (DNS rebinding) gets nothing.
    let rebound = lab.exec(
        &ctl_host,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: evil.example",
            &base,
        ],
    );
    assert_eq!(rebound.stdout.trim(), "403");
    // The API behind the page still wants the token.
    let api = format!("http://127.0.0.1:{PORT}/controller/network");
    let bare = lab.exec(
        &ctl_host,
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", &api],
    );
    assert_eq!(bare.stdout.trim(), "401");

    let browser = Browser::start(&lab, &ctl_host);
    browser.goto(&base);
    browser.type_into("#token", token.trim());
    browser.click("#sign-in");
    browser.wait_for("#networks:not([hidden])", Duration::from_secs(10));
    assert!(
        browser.text("#whoami").contains(&ctl.address()),
        "{}",
        browser.page_text()
    );

    // Create a network.
    browser.type_into("#network-name", "office");
    browser.type_into("#pool-start", "10.147.17.10");
    browser.type_into("#pool-end", "10.147.17.250");
    browser.type_into("#route", "10.147.17.0/24");
    browser.click("#create-network");
    browser.wait_for("#network-rows a", Duration::from_secs(10));
    let nwid = browser.text("#network-rows a");
    assert_eq!(nwid.len(), 16, "{}", browser.page_text());
    assert!(browser.text(&format!("#network-{nwid}")).contains("office"));

    // A member asks to join; the admin sees it and authorizes it.
    let run = m1.cli(&["join", &nwid]);
    assert!(run.ok, "{run:?}");
    browser.click(&format!("#open-{nwid}"));
    let row = format!("#member-{}", m1.address());
    browser.wait_for(&row, Duration::from_secs(15));
    assert_eq!(browser.text(&format!("{row} .status")), "UNAUTHORIZED");
    browser.click(&format!("{row} .authorize"));
    let online = wait_until(Duration::from_secs(20), || {
        browser.text(&format!("{row} .status")) == "ONLINE"
    });
    assert!(online, "the member goes online: {}", browser.text(&row));
    assert!(wait_until(Duration::from_secs(10), || m1.status(&nwid) == "OK"));
    // The path shows with the UI's next refresh of the member's peer.
    let path_shown = wait_until(Duration::from_secs(10), || {
        let text = browser.text(&row);
        text.contains("DIRECT") || text.contains("RELAY")
    });
    assert!(
        path_shown,
        "the member's path is shown: {}",
        browser.text(&row)
    );

    // Name the member (Tab leaves the field, which saves it), set the
    // network's DNS, and make a join key.
    browser.type_into(&format!("{row} input"), "laptop\u{E004}");
    let named = wait_until(Duration::from_secs(10), || {
        ctl.json(&["member", "show", &nwid, &m1.address()])["name"] == "laptop"
    });
    assert!(named, "the name is saved");
    browser.type_into("#set-dns-domain", "office.lan");
    browser.type_into("#set-dns-servers", "10.147.17.10");
    browser.click("#save-settings");
    assert!(
        wait_until(Duration::from_secs(10), || {
            ctl.json(&["network", "show", &nwid])["dns"]["domain"] == "office.lan"
        }),
        "{}",
        browser.text("#network-error")
    );
    browser.click("#key-reusable");
    browser.click("#create-key");
    browser.wait_for("#key-rows tr", Duration::from_secs(10));
    assert!(
        browser
            .text("#new-key")
            .starts_with("New key (shown once): ")
    );
    assert!(
        browser.text("#key-rows").contains("reusable"),
        "{}",
        browser.text("#key-rows")
    );

    // The token never appears in a URL.
    assert!(!browser.url().contains(token.trim()), "{}", browser.url());
    let shot = lab.dir().join("web-ui.png");
    browser.screenshot(&shot);
    let png = fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(keep) = std::env::var("VNET_SCREENSHOT") {
        fs::copy(&shot, keep).expect("copy the screenshot");
    }
}
