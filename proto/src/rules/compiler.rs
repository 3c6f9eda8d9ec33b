//! The rules language (ZeroTier's `rulesSource`): compiled into the JSON
//! the controller takes, the same JSON ZeroTier's `rule-compiler` makes for
//! a file it accepts. Words are read by a winnow tokenizer (whitespace
//! separates them, `#` starts a comment at the start of a word, a word ending
//! in `;` closes the open block); blocks follow the keywords that open them
//! (`drop`, `accept`, `tee`, `watch`, `redirect`, `break`, `priority`,
//! `tag`, `cap`, `macro`), as in ZeroTier's compiler. Errors give the line,
//! the column and what was expected.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};
use winnow::combinator::{alt, preceded, repeat, terminated};
use winnow::prelude::*;
use winnow::stream::LocatingSlice;
use winnow::token::{take_till, take_while};

/// A compile error: where, and what was expected or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct CompileError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What was expected, or what is wrong.
    pub message: String,
}

/// A compiled rule file: what a UI posts to the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The network's rules (ZeroTier's JSON).
    pub rules: Vec<Value>,
    /// Capabilities: `{"id", "default", "rules"}`, in file order.
    pub capabilities: Vec<(String, Value)>,
    /// Tags: name and `{"id", "default", "enums", "flags"}`, in file order.
    pub tags: Vec<(String, Value)>,
}

impl Compiled {
    /// The body to post to `/controller/network/<nwid>`.
    pub fn network_update(&self, source: &str) -> Value {
        json!({
            "rules": self.rules,
            "capabilities": self.capabilities.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
            "tags": self.tags.iter().map(|(_, t)| json!({"id": t["id"], "default": t["default"]})).collect::<Vec<_>>(),
            "rulesSource": source,
        })
    }

    /// What ZeroTier's `rule-compiler/cli.js` prints for the same file.
    pub fn to_cli_json(&self) -> Value {
        let tags: Vec<Value> = self
            .tags
            .iter()
            .map(|(_, t)| {
                // cli.js writes `default || null`: a default of 0 prints as null.
                let d = match &t["default"] {
                    Value::Number(n) if n.as_u64() == Some(0) => Value::Null,
                    other => other.clone(),
                };
                json!({"id": t["id"], "default": d})
            })
            .collect();
        json!({
            "config": {
                "rules": self.rules,
                "capabilities": self.capabilities.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
                "tags": tags,
            },
            "capabilitiesByName": self.capabilities.iter().map(|(n, c)| (n.clone(), c["id"].clone())).collect::<Map<_, _>>(),
            "tagsByName": self.tags.iter().map(|(n, t)| (n.clone(), t.clone())).collect::<Map<_, _>>(),
        })
    }
}

/// One word of the source, where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    line: usize,
    column: usize,
}

/// A word or a block (what followed a block-opening keyword up to its `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Word(Word),
    Block(Vec<Node>),
}

type Input<'a> = LocatingSlice<&'a str>;

/// Whitespace and `#` comments (a `#` starts one only at the start of a word).
fn blank(i: &mut Input<'_>) -> winnow::Result<()> {
    repeat(
        0..,
        alt((
            take_while(1.., char::is_whitespace).void(),
            ('#', take_till(0.., ['\n', '\r'])).void(),
        )),
    )
    .parse_next(i)
}

/// A word and its byte offset.
fn word<'a>(i: &mut Input<'a>) -> winnow::Result<(&'a str, usize)> {
    take_till(1.., char::is_whitespace)
        .with_span()
        .map(|(w, span): (&str, std::ops::Range<usize>)| (w, span.start))
        .parse_next(i)
}

fn words<'a>(i: &mut Input<'a>) -> winnow::Result<Vec<(&'a str, usize)>> {
    preceded(blank, repeat(0.., terminated(word, blank))).parse_next(i)
}

/// Keywords that open a block, closed by a word ending in `;`.
const OPEN_BLOCK_KEYWORDS: [&str; 10] = [
    "macro", "tag", "cap", "drop", "accept", "tee", "watch", "redirect", "break", "priority",
];

/// Words that cannot name a tag, capability or macro, nor be a match argument.
const RESERVED_WORDS: [&str; 50] = [
    "macro",
    "tag",
    "cap",
    "default",
    "drop",
    "accept",
    "tee",
    "watch",
    "redirect",
    "break",
    "priority",
    "ztsrc",
    "ztdest",
    "vlan",
    "vlanpcp",
    "vlandei",
    "ethertype",
    "macsrc",
    "macdest",
    "ipsrc",
    "ipdest",
    "iptos",
    "ipprotocol",
    "icmp",
    "sport",
    "dport",
    "chr",
    "framesize",
    "random",
    "tand",
    "tor",
    "txor",
    "tdiff",
    "teq",
    "tseq",
    "treq",
    "type",
    "enum",
    "class",
    "define",
    "import",
    "include",
    "log",
    "not",
    "xor",
    "or",
    "and",
    "set",
    "var",
    "let",
];

fn reserved(w: &str) -> bool {
    RESERVED_WORDS.contains(&w)
}

/// Names of characteristic bits (0 = least significant).
const CHARACTERISTIC_BITS: [(&str, u32); 17] = [
    ("inbound", 63),
    ("multicast", 62),
    ("broadcast", 61),
    ("ipauth", 60),
    ("macauth", 59),
    ("tcp_fin", 0),
    ("tcp_syn", 1),
    ("tcp_rst", 2),
    ("tcp_psh", 3),
    ("tcp_ack", 4),
    ("tcp_urg", 5),
    ("tcp_ece", 6),
    ("tcp_cwr", 7),
    ("tcp_ns", 8),
    ("tcp_rs2", 9),
    ("tcp_rs1", 10),
    ("tcp_rs0", 11),
];

/// Ethertype names.
const ETHERTYPES: [(&str, u64); 9] = [
    ("ipv4", 0x0800),
    ("arp", 0x0806),
    ("wol", 0x0842),
    ("rarp", 0x8035),
    ("ipv6", 0x86dd),
    ("atalk", 0x809b),
    ("aarp", 0x80f3),
    ("ipx_a", 0x8137),
    ("ipx_b", 0x8138),
];

/// IP protocol names.
const IP_PROTOCOLS: [(&str, u64); 17] = [
    ("icmp", 0x01),
    ("icmp4", 0x01),
    ("icmpv4", 0x01),
    ("igmp", 0x02),
    ("ipip", 0x04),
    ("tcp", 0x06),
    ("egp", 0x08),
    ("igp", 0x09),
    ("udp", 0x11),
    ("rdp", 0x1b),
    ("esp", 0x32),
    ("ah", 0x33),
    ("icmp6", 0x3a),
    ("icmpv6", 0x3a),
    ("l2tp", 0x73),
    ("sctp", 0x84),
    ("udplite", 0x88),
];

/// Each match keyword, its JSON type and how many arguments it takes.
const MATCHES: [(&str, &str, usize); 25] = [
    ("ztsrc", "MATCH_SOURCE_ZEROTIER_ADDRESS", 1),
    ("ztdest", "MATCH_DEST_ZEROTIER_ADDRESS", 1),
    ("vlan", "MATCH_VLAN_ID", 1),
    ("vlanpcp", "MATCH_VLAN_PCP", 1),
    ("vlandei", "MATCH_VLAN_DEI", 1),
    ("ethertype", "MATCH_ETHERTYPE", 1),
    ("macsrc", "MATCH_MAC_SOURCE", 1),
    ("macdest", "MATCH_MAC_DEST", 1),
    ("ipsrc", "", 1),
    ("ipdest", "", 1),
    ("iptos", "MATCH_IP_TOS", 2),
    ("ipprotocol", "MATCH_IP_PROTOCOL", 1),
    ("icmp", "MATCH_ICMP", 2),
    ("sport", "MATCH_IP_SOURCE_PORT_RANGE", 1),
    ("dport", "MATCH_IP_DEST_PORT_RANGE", 1),
    ("chr", "MATCH_CHARACTERISTICS", 1),
    ("framesize", "MATCH_FRAME_SIZE_RANGE", 1),
    ("random", "MATCH_RANDOM", 1),
    ("tand", "MATCH_TAGS_BITWISE_AND", 2),
    ("tor", "MATCH_TAGS_BITWISE_OR", 2),
    ("txor", "MATCH_TAGS_BITWISE_XOR", 2),
    ("tdiff", "MATCH_TAGS_DIFFERENCE", 2),
    ("teq", "MATCH_TAGS_EQUAL", 2),
    ("tseq", "MATCH_TAG_SENDER", 2),
    ("treq", "MATCH_TAG_RECEIVER", 2),
];

/// ZeroTier's `_parseNum`: `0x` hex or decimal (leading digits, as
/// JavaScript's parseInt reads them); `None` where it gives -1.
fn parse_num(s: &str) -> Option<i64> {
    let s = s.to_lowercase();
    let (digits, radix) = match s.strip_prefix("0x") {
        Some(hex) if s.len() > 2 => (hex.to_string(), 16),
        _ => (s.clone(), 10),
    };
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => (-1, rest.to_string()),
        None => (1, digits.trim_start_matches('+').to_string()),
    };
    let lead: String = digits.chars().take_while(|c| c.is_digit(radix)).collect();
    if lead.is_empty() {
        return None;
    }
    i64::from_str_radix(&lead, radix).ok().map(|n| sign * n)
}

fn clean_hex(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect()
}

/// ZeroTier's `_cleanMac`: hex digits grouped in twos with colons.
fn clean_mac(s: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in s.to_lowercase().chars() {
        if out.len() >= 17 {
            break;
        }
        if c.is_ascii_hexdigit() {
            out.push(c);
            count += 1;
            if out.len() != 17 && count >= 2 {
                out.push(':');
                count = 0;
            }
        }
    }
    out
}

/// A name for a tag, capability, macro, flag or enum.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars().all(|c| c == '_' || c.is_alphanumeric())
}

struct Compiler {
    macros: Vec<(String, Vec<String>, Vec<Node>)>,
    tags: Vec<(String, Value)>,
    capabilities: Vec<(String, Value)>,
}

fn err(w: &Word, message: impl Into<String>) -> CompileError {
    CompileError {
        line: w.line,
        column: w.column,
        message: message.into(),
    }
}

/// Compiles a rules file.
pub fn compile(source: &str) -> Result<Compiled, CompileError> {
    let words = tokenize(source)?;
    let parsed = blocks(words);
    let mut c = Compiler {
        macros: Vec::new(),
        tags: Vec::new(),
        capabilities: Vec::new(),
    };
    let mut base = Vec::new();
    let mut caps_source: Vec<(String, Word, Vec<Node>)> = Vec::new();
    let mut i = 0;
    while i < parsed.len() {
        let keyword = match &parsed[i] {
            Node::Word(w) => Some(w.clone()),
            Node::Block(_) => None,
        };
        let lower = keyword.as_ref().map(|w| w.text.to_lowercase());
        match (keyword, lower.as_deref()) {
            (Some(kw), Some(what @ ("macro" | "tag" | "cap"))) => {
                let Some(Node::Block(body)) = parsed.get(i + 1) else {
                    return Err(err(&kw, format!("expected a {what} name after {what}")));
                };
                let Some(Node::Word(name)) = body.first() else {
                    return Err(err(&kw, format!("expected a {what} name after {what}")));
                };
                i += 1;
                match what {
                    "macro" => c.define_macro(name, &body[1..])?,
                    "tag" => c.define_tag(name, &body[1..])?,
                    _ => {
                        let (cap_name, id, dfl, rules) = c.define_capability(name, &body[1..])?;
                        c.capabilities.push((
                            cap_name.clone(),
                            json!({"id": id, "default": dfl, "rules": []}),
                        ));
                        caps_source.push((cap_name, name.clone(), rules));
                    }
                }
            }
            _ => base.push(parsed[i].clone()),
        }
        i += 1;
    }
    for (name, _, tree) in caps_source {
        let mut rules = Vec::new();
        c.render_actions(&tree, &mut rules, &[])?;
        if let Some((_, cap)) = c.capabilities.iter_mut().find(|(n, _)| *n == name) {
            cap["rules"] = Value::Array(rules);
        }
    }
    let mut rules = Vec::new();
    c.render_actions(&base, &mut rules, &[])?;
    Ok(Compiled {
        rules,
        capabilities: c.capabilities,
        tags: c.tags,
    })
}

fn tokenize(source: &str) -> Result<Vec<Word>, CompileError> {
    let mut input = LocatingSlice::new(source);
    let found = words.parse_next(&mut input).map_err(|_| CompileError {
        line: 1,
        column: 1,
        message: "expected words separated by whitespace".into(),
    })?;
    // Line and column of each word, counted once over the source.
    let mut out = Vec::with_capacity(found.len());
    let (mut line, mut line_start, mut at) = (1, 0, 0);
    for (text, offset) in found {
        for (i, ch) in source[at..offset].char_indices() {
            if ch == '\n' {
                line += 1;
                line_start = at + i + 1;
            }
        }
        at = offset;
        out.push(Word {
            text: text.to_string(),
            line,
            column: source[line_start..offset].chars().count() + 1,
        });
    }
    Ok(out)
}

/// ZeroTier's first pass: block-opening keywords start a block, a word
/// ending in `;` closes the innermost non-empty one.
fn blocks(words: Vec<Word>) -> Vec<Node> {
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    for mut w in words {
        let end = w.text.ends_with(';');
        if end {
            w.text.pop();
        }
        let opens = OPEN_BLOCK_KEYWORDS.contains(&w.text.as_str());
        if !w.text.is_empty() {
            stack.last_mut().expect("never empty").push(Node::Word(w));
        }
        if end && stack.len() > 1 && !stack.last().expect("never empty").is_empty() {
            let block = stack.pop().expect("more than one");
            stack
                .last_mut()
                .expect("never empty")
                .push(Node::Block(block));
        } else if opens && !end {
            // (ZeroTier's compiler opens a block even after `accept;`, so
            // that anything after it lands in accept's block and fails to
            // compile; such a keyword stands alone here.)
            stack.push(Vec::new());
        }
    }
    while stack.len() > 1 && !stack.last().expect("never empty").is_empty() {
        let block = stack.pop().expect("more than one");
        stack
            .last_mut()
            .expect("never empty")
            .push(Node::Block(block));
    }
    stack.swap_remove(0)
}

/// The words of a block (a nested block where a word belongs is an error at `at`).
fn block_words<'a>(nodes: &'a [Node], at: &Word) -> Result<Vec<&'a Word>, CompileError> {
    nodes
        .iter()
        .map(|n| match n {
            Node::Word(w) => Ok(w),
            Node::Block(b) => Err(first_word(b).map_or_else(
                || err(at, "expected a word, found an empty block"),
                |w| {
                    err(
                        w,
                        format!("expected a word, found a block opened by {:?}", w.text),
                    )
                },
            )),
        })
        .collect()
}

fn first_word(nodes: &[Node]) -> Option<&Word> {
    nodes.iter().find_map(|n| match n {
        Node::Word(w) => Some(w),
        Node::Block(b) => first_word(b),
    })
}

impl Compiler {
    fn check_name(&self, name: &Word, what: &str) -> Result<String, CompileError> {
        let n = name.text.to_lowercase();
        if !valid_name(&n) {
            return Err(err(
                name,
                format!(
                    "expected a {what} name (letters, digits, _; not starting with a digit), found {:?}",
                    name.text
                ),
            ));
        }
        if reserved(&n) {
            return Err(err(
                name,
                format!("{what} name {:?} is a reserved word", name.text),
            ));
        }
        Ok(n)
    }

    fn define_macro(&mut self, name: &Word, body: &[Node]) -> Result<(), CompileError> {
        let lower = name.text.to_lowercase();
        let (base, params) = match lower.find('(') {
            Some(p) if p > 0 => (
                lower[..p].to_string(),
                lower[p + 1..]
                    .split([',', ')'])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            _ => (lower.clone(), Vec::new()),
        };
        let base_word = Word {
            text: base.clone(),
            ..name.clone()
        };
        let base = self.check_name(&base_word, "macro")?;
        if self.macros.iter().any(|(n, _, _)| *n == base) {
            return Err(err(name, format!("macro {base:?} is defined twice")));
        }
        self.macros.push((base, params, body.to_vec()));
        Ok(())
    }

    fn define_tag(&mut self, name: &Word, body: &[Node]) -> Result<(), CompileError> {
        let tag_name = self.check_name(name, "tag")?;
        if self.tags.iter().any(|(n, _)| *n == tag_name) {
            return Err(err(name, format!("tag {tag_name:?} is defined twice")));
        }
        let words = block_words(body, name)?;
        let mut flags = Map::new();
        let mut enums = Map::new();
        let mut id: Option<i64> = None;
        let mut dfl: Option<&Word> = None;
        let mut k = 0;
        let next = |k: usize, what: &str| -> Result<&Word, CompileError> {
            words.get(k + 1).copied().ok_or_else(|| {
                err(
                    words[k],
                    format!("expected {what} after {:?}", words[k].text),
                )
            })
        };
        while k < words.len() {
            let w = words[k];
            match w.text.to_lowercase().as_str() {
                "id" => {
                    if id.is_some() {
                        return Err(err(w, "the tag's id is given twice"));
                    }
                    let v = next(k, "a numeric id")?;
                    k += 1;
                    id = Some(
                        parse_num(&v.text)
                            .filter(|n| (0..=0xffff_ffff).contains(n))
                            .ok_or_else(|| {
                                err(
                                    v,
                                    format!(
                                        "expected a tag id from 0 to 4294967295, found {:?}",
                                        v.text
                                    ),
                                )
                            })?,
                    );
                }
                "default" => {
                    if dfl.is_some() {
                        return Err(err(w, "the tag's default is given twice"));
                    }
                    dfl = Some(next(k, "a default value")?);
                    k += 1;
                }
                "flag" => {
                    let bits = next(k, "a bit index and a flag name")?;
                    let fname = words
                        .get(k + 2)
                        .copied()
                        .ok_or_else(|| err(bits, "expected a flag name after the bit index"))?;
                    k += 2;
                    let mut mask: u64 = 0;
                    for b in bits.text.split(',').filter(|s| !s.is_empty()) {
                        let b = b.to_lowercase();
                        if let Some(m) = flags.get(&b).and_then(Value::as_u64) {
                            mask |= m;
                        } else {
                            let bit = parse_num(&b).filter(|n| (0..=31).contains(n)).ok_or_else(|| err(bits, format!("expected a bit index from 0 to 31 or a flag name, found {b:?}")))?;
                            mask |= 1 << bit;
                        }
                    }
                    let n = fname.text.to_lowercase();
                    if !valid_name(&n) {
                        return Err(err(
                            fname,
                            format!("expected a flag name, found {:?}", fname.text),
                        ));
                    }
                    if flags.contains_key(&n) {
                        return Err(err(fname, format!("flag {n:?} is defined twice")));
                    }
                    flags.insert(n, json!(mask));
                }
                "enum" => {
                    let v = next(k, "an enum value and name")?;
                    let ename = words
                        .get(k + 2)
                        .copied()
                        .ok_or_else(|| err(v, "expected an enum name after the value"))?;
                    k += 2;
                    let value = parse_num(&v.text)
                        .filter(|n| (0..=0xffff_ffff).contains(n))
                        .ok_or_else(|| {
                            err(
                                v,
                                format!(
                                    "expected an enum value from 0 to 4294967295, found {:?}",
                                    v.text
                                ),
                            )
                        })?;
                    let n = ename.text.to_lowercase();
                    if !valid_name(&n) {
                        return Err(err(
                            ename,
                            format!("expected an enum name, found {:?}", ename.text),
                        ));
                    }
                    if enums.contains_key(&n) {
                        return Err(err(ename, format!("enum {n:?} is defined twice")));
                    }
                    enums.insert(n, json!(value));
                }
                _ => {
                    return Err(err(
                        w,
                        format!(
                            "expected id, default, flag or enum in the tag definition, found {:?}",
                            w.text
                        ),
                    ));
                }
            }
            k += 1;
        }
        let id = id.ok_or_else(|| {
            err(
                name,
                "expected an id in the tag definition (tag <name> id <number> ...)",
            )
        })?;
        let default = dfl.map(|d| {
            let t = d.text.as_str();
            enums
                .get(t)
                .or_else(|| flags.get(t))
                .cloned()
                .unwrap_or_else(|| {
                    json!(parse_num(t).map_or(0, |n| n.unsigned_abs() & 0xffff_ffff))
                })
        });
        self.tags.push((
            tag_name,
            json!({"id": id, "default": default, "enums": enums, "flags": flags}),
        ));
        Ok(())
    }

    fn define_capability(
        &mut self,
        name: &Word,
        body: &[Node],
    ) -> Result<(String, i64, bool, Vec<Node>), CompileError> {
        let cap_name = self.check_name(name, "capability")?;
        if self.capabilities.iter().any(|(n, _)| *n == cap_name) {
            return Err(err(
                name,
                format!("capability {cap_name:?} is defined twice"),
            ));
        }
        let mut id: Option<i64> = None;
        let mut dfl = false;
        let mut rules = Vec::new();
        let mut k = 0;
        while k < body.len() {
            match &body[k] {
                Node::Word(w) if w.text.eq_ignore_ascii_case("id") => {
                    if id.is_some() {
                        return Err(err(w, "the capability's id is given twice"));
                    }
                    let Some(Node::Word(v)) = body.get(k + 1) else {
                        return Err(err(w, "expected a numeric id after id"));
                    };
                    k += 1;
                    let n = parse_num(&v.text)
                        .filter(|n| (0..=0xffff_ffff).contains(n))
                        .ok_or_else(|| {
                            err(
                                v,
                                format!(
                                    "expected a capability id from 0 to 4294967295, found {:?}",
                                    v.text
                                ),
                            )
                        })?;
                    if self.capabilities.iter().any(|(_, c)| c["id"] == json!(n)) {
                        return Err(err(v, format!("capability id {n} is used twice")));
                    }
                    id = Some(n);
                }
                Node::Word(w) if w.text.eq_ignore_ascii_case("default") => dfl = true,
                other => rules.push(other.clone()),
            }
            k += 1;
        }
        let id = id.ok_or_else(|| {
            err(
                name,
                "expected an id in the capability definition (cap <name> id <number> ...)",
            )
        })?;
        Ok((cap_name, id, dfl, rules))
    }

    fn render_actions(
        &self,
        tree: &[Node],
        rules: &mut Vec<Value>,
        params: &[(String, String)],
    ) -> Result<(), CompileError> {
        let mut k = 0;
        while k < tree.len() {
            let Node::Word(w) = &tree[k] else {
                let at = first_word(std::slice::from_ref(&tree[k]));
                return Err(at.map_or_else(
                    || CompileError { line: 1, column: 1, message: "expected an action".into() },
                    |w| err(w, format!("expected an action (drop, accept, break, tee, watch, redirect, include), found {:?}", w.text)),
                ));
            };
            let action = w.text.to_lowercase();
            let block = match tree.get(k + 1) {
                Some(Node::Block(b)) => Some(b.as_slice()),
                _ => None,
            };
            match action.as_str() {
                "include" => {
                    let Some(Node::Word(m)) = tree.get(k + 1) else {
                        return Err(err(w, "expected a macro name after include"));
                    };
                    k += 1;
                    let lower = m.text.to_lowercase();
                    let (mname, args): (&str, Vec<String>) = match lower.find('(') {
                        Some(p) if p > 0 => (
                            &lower[..p],
                            m.text[p + 1..]
                                .split([',', ')'])
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect(),
                        ),
                        _ => (&lower, Vec::new()),
                    };
                    let Some((_, names, body)) = self.macros.iter().find(|(n, _, _)| n == mname)
                    else {
                        return Err(err(m, format!("expected a defined macro, found {mname:?}")));
                    };
                    let mut bound = Vec::new();
                    for (i, p) in names.iter().enumerate() {
                        let value = args.get(i).ok_or_else(|| {
                            err(
                                m,
                                format!(
                                    "expected {} macro parameter(s), found {}",
                                    names.len(),
                                    args.len()
                                ),
                            )
                        })?;
                        bound.push((p.clone(), value.clone()));
                    }
                    self.render_actions(body, rules, &bound)?;
                }
                "drop" | "accept" | "break" => {
                    if let Some(b) = block {
                        k += 1;
                        self.render_matches(b, w, rules, params)?;
                    }
                    let t = match action.as_str() {
                        "drop" => "ACTION_DROP",
                        "accept" => "ACTION_ACCEPT",
                        _ => "ACTION_BREAK",
                    };
                    rules.push(json!({"type": t}));
                }
                "tee" | "watch" => {
                    let b = block.filter(|b| b.len() >= 2).ok_or_else(|| {
                        err(
                            w,
                            format!(
                                "expected a length (0: all) and a member address after {action}"
                            ),
                        )
                    })?;
                    k += 1;
                    let bw = block_words(&b[..2], w)?;
                    let length = parse_num(&bw[0].text)
                        .filter(|n| (-1..=0xffff).contains(n))
                        .ok_or_else(|| {
                            err(
                                bw[0],
                                format!(
                                    "expected a length from 0 to 65535, found {:?}",
                                    bw[0].text
                                ),
                            )
                        })?;
                    if bw[1].text.len() != 10 {
                        return Err(err(
                            bw[1],
                            format!(
                                "expected a member address (10 hex digits), found {:?}",
                                bw[1].text
                            ),
                        ));
                    }
                    self.render_matches(&b[2..], w, rules, params)?;
                    let t = if action == "tee" {
                        "ACTION_TEE"
                    } else {
                        "ACTION_WATCH"
                    };
                    rules.push(json!({"type": t, "address": bw[1].text, "length": length}));
                }
                "redirect" => {
                    let b = block
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| err(w, "expected a member address after redirect"))?;
                    k += 1;
                    let bw = block_words(&b[..1], w)?;
                    if bw[0].text.len() != 10 {
                        return Err(err(
                            bw[0],
                            format!(
                                "expected a member address (10 hex digits), found {:?}",
                                bw[0].text
                            ),
                        ));
                    }
                    self.render_matches(&b[1..], w, rules, params)?;
                    rules.push(json!({"type": "ACTION_REDIRECT", "address": bw[0].text}));
                }
                _ => {
                    return Err(err(
                        w,
                        format!(
                            "expected an action (drop, accept, break, tee, watch, redirect) or include, found {:?}",
                            w.text
                        ),
                    ));
                }
            }
            k += 1;
        }
        Ok(())
    }

    fn render_matches(
        &self,
        tree: &[Node],
        action: &Word,
        rules: &mut Vec<Value>,
        params: &[(String, String)],
    ) -> Result<(), CompileError> {
        let words = block_words(tree, action)?;
        let (mut not, mut or) = (false, false);
        let mut k = 0;
        while k < words.len() {
            let w = words[k];
            let m = w.text.to_lowercase();
            match m.as_str() {
                "" | "and" => {}
                "not" => not = true,
                "or" => or = true,
                _ => {
                    let Some(&(_, json_type, count)) = MATCHES.iter().find(|(kw, _, _)| *kw == m)
                    else {
                        return Err(err(
                            w,
                            format!(
                                "expected a match (ethertype, ipprotocol, dport, ...), not, or, and, found {:?}",
                                w.text
                            ),
                        ));
                    };
                    let mut args: Vec<Word> = Vec::with_capacity(count);
                    for _ in 0..count {
                        k += 1;
                        let Some(a) = words.get(k) else {
                            return Err(err(
                                words[k - 1],
                                format!("expected {count} argument(s) after {m}"),
                            ));
                        };
                        if reserved(&a.text) {
                            return Err(err(
                                a,
                                format!(
                                    "expected an argument to {m}, found the keyword {:?}",
                                    a.text
                                ),
                            ));
                        }
                        if let Some(var) = a.text.strip_prefix('$') {
                            let value = params
                                .iter()
                                .find(|(p, _)| p == &format!("${var}") || p == var)
                                .map(|(_, v)| v.clone());
                            let value = value.ok_or_else(|| {
                                err(
                                    a,
                                    format!(
                                        "expected a macro parameter, found undefined {:?}",
                                        a.text
                                    ),
                                )
                            })?;
                            args.push(Word {
                                text: value,
                                ..(*a).clone()
                            });
                        } else {
                            args.push((*a).clone());
                        }
                    }
                    let mut r = self.render_match(&m, json_type, &args)?;
                    r["not"] = json!(not);
                    r["or"] = json!(or);
                    rules.push(r);
                    not = false;
                    or = false;
                }
            }
            k += 1;
        }
        Ok(())
    }

    fn render_match(&self, m: &str, json_type: &str, args: &[Word]) -> Result<Value, CompileError> {
        let a = &args[0];
        let range = |w: &Word, max: i64, what: &str| -> Result<(i64, i64), CompileError> {
            let bad = || {
                err(
                    w,
                    format!(
                        "expected a {what} or a range (low-high) from 0 to {max}, found {:?}",
                        w.text
                    ),
                )
            };
            let (lo, hi) = match w.text.find('-') {
                Some(p) if p > 0 => {
                    let parts: Vec<&str> = w.text.split('-').collect();
                    if parts.len() != 2 {
                        return Err(bad());
                    }
                    (
                        parse_num(parts[0]).ok_or_else(bad)?,
                        parse_num(parts[1]).ok_or_else(bad)?,
                    )
                }
                _ => {
                    let n = parse_num(&w.text).ok_or_else(bad)?;
                    (n, n)
                }
            };
            if lo < 0 || hi < lo || hi > max {
                return Err(bad());
            }
            Ok((lo, hi))
        };
        Ok(match m {
            "ztsrc" | "ztdest" => {
                let zt = clean_hex(&a.text);
                if zt.len() != 10 {
                    return Err(err(
                        a,
                        format!(
                            "expected a member address (10 hex digits), found {:?}",
                            a.text
                        ),
                    ));
                }
                json!({"type": json_type, "zt": zt})
            }
            "vlan" | "vlanpcp" | "vlandei" | "ethertype" | "ipprotocol" => {
                let named = match m {
                    "ethertype" => ETHERTYPES
                        .iter()
                        .find(|(n, _)| *n == a.text)
                        .map(|(_, v)| *v as i64),
                    "ipprotocol" => IP_PROTOCOLS
                        .iter()
                        .find(|(n, _)| *n == a.text)
                        .map(|(_, v)| *v as i64),
                    _ => None,
                };
                let num = named
                    .or_else(|| parse_num(&a.text))
                    .filter(|n| (0..=0xffff_ffff).contains(n))
                    .ok_or_else(|| {
                        err(
                            a,
                            format!("expected a number or a name for {m}, found {:?}", a.text),
                        )
                    })?;
                let field = match m {
                    "vlan" => "vlanId",
                    "vlanpcp" => "vlanPcp",
                    "vlandei" => "vlanDei",
                    "ethertype" => "etherType",
                    _ => "ipProtocol",
                };
                json!({"type": json_type, field: num})
            }
            "random" => {
                let p: f64 = a.text.trim().parse::<f64>().unwrap_or(0.0).clamp(0.0, 1.0);
                json!({"type": json_type, "probability": (4_294_967_295.0 * p).floor() as u64})
            }
            "macsrc" | "macdest" => {
                let mac = clean_mac(&a.text);
                if mac.len() != 17 {
                    return Err(err(
                        a,
                        format!("expected a MAC address, found {:?}", a.text),
                    ));
                }
                json!({"type": json_type, "mac": mac})
            }
            "ipsrc" | "ipdest" => {
                let Some((ip, _)) = a.text.split_once('/').filter(|(ip, _)| !ip.is_empty()) else {
                    return Err(err(
                        a,
                        format!("expected an address with its /bits, found {:?}", a.text),
                    ));
                };
                let src = m == "ipsrc";
                let t = if ip.parse::<Ipv6Addr>().is_ok() {
                    if src {
                        "MATCH_IPV6_SOURCE"
                    } else {
                        "MATCH_IPV6_DEST"
                    }
                } else if ip.parse::<Ipv4Addr>().is_ok() {
                    if src {
                        "MATCH_IPV4_SOURCE"
                    } else {
                        "MATCH_IPV4_DEST"
                    }
                } else {
                    return Err(err(
                        a,
                        format!("expected an IPv4 or IPv6 address, found {ip:?}"),
                    ));
                };
                json!({"type": t, "ip": a.text})
            }
            "icmp" => {
                let t = parse_num(&a.text)
                    .filter(|n| (0..=0xff).contains(n))
                    .ok_or_else(|| {
                        err(
                            a,
                            format!("expected an ICMP type from 0 to 255, found {:?}", a.text),
                        )
                    })?;
                let code = parse_num(&args[1].text).unwrap_or(-1);
                if code > 0xff {
                    return Err(err(
                        &args[1],
                        format!(
                            "expected an ICMP code from 0 to 255 (-1: any), found {:?}",
                            args[1].text
                        ),
                    ));
                }
                json!({"type": json_type, "icmpType": t, "icmpCode": if code < 0 { Value::Null } else { json!(code) }})
            }
            "sport" | "dport" | "framesize" => {
                let what = if m == "framesize" { "size" } else { "port" };
                let (lo, hi) = range(a, 0xffff, what)?;
                json!({"type": json_type, "start": lo, "end": hi})
            }
            "iptos" => {
                let mask = parse_num(&a.text)
                    .filter(|n| (0..=0xff).contains(n))
                    .ok_or_else(|| {
                        err(
                            a,
                            format!("expected a mask from 0 to 255, found {:?}", a.text),
                        )
                    })?;
                let (lo, hi) = range(&args[1], 0xff, "value")?;
                json!({"type": json_type, "mask": mask, "start": lo, "end": hi})
            }
            "chr" => {
                let mut mask: u64 = 0;
                for name in a.text.split(',').filter(|s| !s.is_empty()) {
                    let bit = CHARACTERISTIC_BITS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, b)| i64::from(*b))
                        .or_else(|| parse_num(name))
                        .filter(|b| (0..=63).contains(b))
                        .ok_or_else(|| err(a, format!("expected a characteristic (tcp_syn, inbound, ...) or a bit from 0 to 63, found {name:?}")))?;
                    mask |= 1 << bit;
                }
                json!({"type": json_type, "mask": format!("{mask:016x}")})
            }
            _ => {
                // Tag matches: a tag name (its enums and flags name values) or numbers.
                let tag = self.tags.iter().find(|(n, _)| *n == a.text).map(|(_, t)| t);
                let (id, value) = match tag {
                    Some(t) => {
                        let v = &args[1].text;
                        let named = t["flags"]
                            .get(v.as_str())
                            .or_else(|| t["enums"].get(v.as_str()))
                            .and_then(Value::as_i64);
                        (
                            t["id"].as_i64().unwrap_or(-1),
                            named.or_else(|| parse_num(v)).unwrap_or(-1),
                        )
                    }
                    None => (
                        parse_num(&a.text).unwrap_or(-1),
                        parse_num(&args[1].text).unwrap_or(-1),
                    ),
                };
                if !(0..=0xffff_ffff).contains(&id) {
                    return Err(err(
                        a,
                        format!(
                            "expected a defined tag name or a tag id, found {:?}",
                            a.text
                        ),
                    ));
                }
                if !(0..=0xffff_ffff).contains(&value) {
                    return Err(err(
                        &args[1],
                        format!(
                            "expected a tag value, flag or enum name, found {:?}",
                            args[1].text
                        ),
                    ));
                }
                json!({"type": json_type, "id": id, "value": value})
            }
        })
    }
}

impl fmt::Display for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rules, {} capabilities, {} tags",
            self.rules.len(),
            self.capabilities.len(),
            self.tags.len()
        )
    }
}
