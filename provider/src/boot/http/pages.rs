//! The operator's pages, server-rendered and self-contained (no scripts, fonts or styles from elsewhere: boot
//! networks are often offline):
//! - `/`: a summary (hosts per state and per last phase), the last boot wave as a chart (hosts that reached
//!   each phase over time, one line per phase), filters (`state`, `image`, `q` for a name substring) and one
//!   row per host with its phase times, refreshed every 2 s;
//! - `/hosts/<name>`: one host — addresses, image, state, each phase with its time and the step from the one
//!   before, its earlier boots, callback, local disks, hardware, and its console (the captured tail,
//!   refreshed in place).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use jiff::Timestamp;

use super::{AppState, HostView, host_views};
use crate::boot::Phase;
use crate::boot::phases::BootRecord;

/// Console lines a host page shows.
const PAGE_CONSOLE_LINES: usize = 200;
/// Points per chart line at most (a wave of thousands of hosts is sampled, keeping its first and last).
const CHART_POINTS: usize = 400;
const CHART_W: f64 = 900.0;
const CHART_H: f64 = 220.0;
/// One colour per phase, in `Phase::ALL` order.
const COLOURS: [&str; 10] = [
    "#9cf", "#6af", "#c9f", "#f9c", "#fc6", "#fa6", "#f76", "#9f9", "#4d4", "#6dd",
];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;background:#111;color:#ddd;margin:1.5em}\
h1{font-size:1.3em} h2{font-size:1.1em;margin-top:1.4em} a{color:#9cf}\
table{border-collapse:collapse} th,td{padding:.25em .6em;border-bottom:1px solid #333;text-align:left;white-space:nowrap}\
td.p{text-align:right;font-variant-numeric:tabular-nums;color:#8c8} td.n{color:#555;text-align:right}\
.booted{color:#4d4;font-weight:bold} .booting{color:#fc3} .idle{color:#777} .failed{color:#f66;white-space:normal}\
.summary span{display:inline-block;margin-right:1.2em} form{margin:.8em 0}\
pre{background:#000;color:#ccc;padding:.6em;max-height:40em;overflow:auto;white-space:pre-wrap}";

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page's hardware cell: the inspection summary, or whether an inspection is due.
fn hardware_cell(v: &HostView) -> String {
    if v.discovered {
        return match &v.hardware {
            Some(hw) => format!("{} (discovered: add it to the inventory)", hw.summary()),
            None => "discovered: inspecting".to_string(),
        };
    }
    match (&v.hardware, v.boots.as_deref() == Some(v.image.as_str())) {
        (Some(hw), true) => hw.summary(),
        (Some(hw), false) => format!("{} (inspection requested)", hw.summary()),
        (None, false) => "not inspected yet: next boot inspects".to_string(),
        (None, true) => "·".to_string(),
    }
}

/// Which hosts the page lists.
struct Filter {
    state: Option<String>,
    image: Option<String>,
    name: Option<String>,
}

impl Filter {
    fn from_query(q: &HashMap<String, String>) -> Filter {
        let get = |k: &str| {
            q.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Filter {
            state: get("state"),
            image: get("image"),
            name: get("q"),
        }
    }

    fn keeps(&self, v: &HostView) -> bool {
        self.state.as_deref().is_none_or(|s| s == v.state)
            && self.image.as_deref().is_none_or(|i| i == v.image)
            && self.name.as_deref().is_none_or(|n| v.name.contains(n))
    }
}

/// `GET /[?state=…][&image=…][&q=…]`.
pub async fn status_page(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Html<String> {
    let inv = s.plane.directory.get();
    let views = host_views(&s.plane);
    let records: Vec<BootRecord> = views
        .iter()
        .map(|v| {
            v.mac
                .parse::<crate::boot::MacAddr>()
                .ok()
                .and_then(|m| s.plane.boot_record(&m))
                .unwrap_or_default()
        })
        .collect();
    let count = |state: &str| views.iter().filter(|v| v.state == state).count();
    let (booted, booting, idle) = (count("booted"), count("booting"), count("idle"));
    let filter = Filter::from_query(&query);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
<title>beowulf boot plane: {booted}/{total} booted</title><style>{STYLE}</style></head><body>\
<h1>beowulf boot plane &middot; namespace {ns} &middot; {booted} booted, {booting} booting, {total} hosts</h1>",
        total = views.len(),
        ns = esc(&inv.namespace),
    );

    // Summary: hosts per state, and per last phase of the boots under way.
    let mut per_phase: BTreeMap<Phase, usize> = BTreeMap::new();
    for r in &records {
        if let Some(p) = r.latest() {
            *per_phase.entry(p).or_default() += 1;
        }
    }
    let _ = write!(
        h,
        "<p class=\"summary\" id=\"summary\"><span class=\"booted\">booted {booted}</span>\
<span class=\"booting\">booting {booting}</span><span class=\"idle\">idle {idle}</span>"
    );
    for (p, n) in &per_phase {
        let _ = write!(h, "<span>at {}: {n}</span>", p.as_str());
    }
    h.push_str("</p>");
    h.push_str(&wave_chart(&records));

    // Filters (a GET form: the refresh keeps them, and a filtered page can be bookmarked).
    let sel = |cur: &Option<String>, v: &str| {
        if cur.as_deref() == Some(v) {
            " selected"
        } else {
            ""
        }
    };
    let _ = write!(
        h,
        "<form method=\"get\" action=\"/\">state <select name=\"state\"><option value=\"\">any</option>\
<option{}>idle</option><option{}>booting</option><option{}>booted</option></select> image <select name=\"image\">\
<option value=\"\">any</option>",
        sel(&filter.state, "idle"),
        sel(&filter.state, "booting"),
        sel(&filter.state, "booted"),
    );
    for name in inv.images.keys() {
        let _ = write!(
            h,
            "<option{}>{}</option>",
            sel(&filter.image, name),
            esc(name)
        );
    }
    let _ = write!(
        h,
        "</select> name <input name=\"q\" value=\"{}\" size=\"16\"> <button>show</button></form>",
        esc(filter.name.as_deref().unwrap_or(""))
    );

    h.push_str("<table id=\"hosts\"><tr><th>host</th><th>MAC</th><th>address</th><th>image</th><th>hardware</th><th>state</th><th>boot</th>");
    for p in Phase::ALL {
        let _ = write!(h, "<th>{}</th>", p.as_str());
    }
    h.push_str("</tr>");
    let mut shown = 0;
    for (v, rec) in views.iter().zip(&records) {
        if !filter.keeps(v) {
            continue;
        }
        shown += 1;
        let _ = write!(
            h,
            "<tr class=\"host\"><td><a href=\"/hosts/{n}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{st}\">{st}</td><td>{}</td>",
            esc(&v.mac),
            esc(&v.ip),
            esc(&v.image),
            esc(&hardware_cell(v)),
            v.boot,
            n = esc(&v.name),
            st = v.state,
        );
        let start = rec.started();
        for p in Phase::ALL {
            match (rec.phases.get(&p), start) {
                (Some(t), Some(st)) => {
                    let _ = write!(
                        h,
                        "<td class=\"p\" title=\"{t}\">+{:.1}s</td>",
                        t.duration_since(st).as_secs_f64()
                    );
                }
                _ => h.push_str("<td class=\"n\">&middot;</td>"),
            }
        }
        h.push_str("</tr>");
    }
    let _ = writeln!(
        h,
        "</table><p>{shown} of {} hosts shown. Times are seconds since the boot's first phase. JSON: \
<a href=\"/api/hosts\">/api/hosts</a>, metrics: <a href=\"/metrics\">/metrics</a>.</p></body></html>",
        views.len()
    );
    Html(h)
}

/// The last boot wave: for each phase, how many hosts had reached it how long after the wave began (the
/// earliest start among the current boots). An SVG of one line per phase; empty when nothing booted.
fn wave_chart(records: &[BootRecord]) -> String {
    let Some(t0) = records.iter().filter_map(BootRecord::started).min() else {
        return String::new();
    };
    let hosts = records
        .iter()
        .filter(|r| !r.phases.is_empty())
        .count()
        .max(1);
    let secs = |t: &Timestamp| t.duration_since(t0).as_secs_f64().max(0.0);
    let mut lines: Vec<(Phase, Vec<f64>)> = Phase::ALL
        .iter()
        .map(|p| {
            let mut at: Vec<f64> = records
                .iter()
                .filter_map(|r| r.phases.get(p))
                .map(secs)
                .collect();
            at.sort_by(f64::total_cmp);
            (*p, at)
        })
        .filter(|(_, at)| !at.is_empty())
        .collect();
    let span = lines
        .iter()
        .filter_map(|(_, at)| at.last().copied())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<h2>Last boot wave</h2><svg id=\"wave\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hh}\" \
viewBox=\"0 0 {w} {hh}\" role=\"img\" aria-label=\"hosts per phase over time\">\
<rect x=\"40\" y=\"0\" width=\"{CHART_W}\" height=\"{CHART_H}\" fill=\"#000\"/>\
<text x=\"0\" y=\"12\" fill=\"#888\" font-size=\"11\">{hosts}</text><text x=\"0\" y=\"{CHART_H}\" fill=\"#888\" font-size=\"11\">0</text>\
<text x=\"40\" y=\"{ty}\" fill=\"#888\" font-size=\"11\">0 s</text>\
<text x=\"{tx}\" y=\"{ty}\" fill=\"#888\" font-size=\"11\" text-anchor=\"end\">{span:.1} s</text>",
        w = CHART_W + 180.0,
        hh = CHART_H + 18.0,
        ty = CHART_H + 14.0,
        tx = CHART_W + 40.0,
    );
    for (i, (phase, at)) in lines.iter_mut().enumerate() {
        let colour =
            COLOURS[Phase::ALL.iter().position(|p| p == phase).unwrap_or(0) % COLOURS.len()];
        // A step line: the count rises by one at each host's time; sampled to at most CHART_POINTS steps.
        let n = at.len();
        let step = n.div_ceil(CHART_POINTS).max(1);
        let mut points = String::from("40,");
        let _ = write!(points, "{CHART_H}");
        let x = |t: f64| 40.0 + t / span * CHART_W;
        let y = |k: usize| CHART_H - (k as f64) / (hosts as f64) * CHART_H;
        let mut k = 0;
        while k < n {
            let last = (k + step).min(n);
            let _ = write!(
                points,
                " {:.1},{:.1} {:.1},{:.1}",
                x(at[k]),
                y(k),
                x(at[k]),
                y(last)
            );
            k = last;
        }
        // Level to the right edge: how many reached it stays readable after the last arrival.
        let _ = write!(points, " {:.1},{:.1}", 40.0 + CHART_W, y(n));
        let _ = write!(
            svg,
            "<polyline class=\"phase\" data-phase=\"{p}\" data-hosts=\"{n}\" fill=\"none\" stroke=\"{colour}\" \
stroke-width=\"1.5\" points=\"{points}\"/><text x=\"{lx}\" y=\"{ly}\" fill=\"{colour}\" font-size=\"11\">{p} {n}</text>",
            p = phase.as_str(),
            lx = CHART_W + 48.0,
            ly = 12.0 + 14.0 * i as f64,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `GET /hosts/<name>`.
pub async fn host_page(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    // Asked before anything else is read, so no lock is held while the BMC answers (at most 2 s).
    let power = match s.plane.power() {
        Some(cache) if s.plane.directory.get().host(&name).is_some() => {
            Some(cache.get(&name).await.to_string())
        }
        _ => None,
    };
    let views = host_views(&s.plane);
    let Some(v) = views.iter().find(|v| v.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<p>no such host</p>\n".to_string()),
        )
            .into_response();
    };
    // What the console last said went wrong (a panic, a failed unit), with when it said it.
    let last_error = s
        .plane
        .consoles()
        .and_then(|logs| logs.existing(&v.name))
        .and_then(|l| crate::console::quote::last_error(&l));
    let rec = v
        .mac
        .parse::<crate::boot::MacAddr>()
        .ok()
        .and_then(|m| s.plane.boot_record(&m))
        .unwrap_or_default();
    let n = esc(&v.name);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{n} &middot; beowulf</title><style>{STYLE}</style>\
</head><body><p><a href=\"/\">&larr; all hosts</a></p><h1>{n} &middot; <span id=\"state\" class=\"{st}\">{st}</span></h1>\
<table><tr><th>MAC</th><td>{}</td></tr><tr><th>address</th><td>{}</td></tr><tr><th>network</th><td>{}</td></tr>\
<tr><th>image</th><td>{}</td></tr><tr><th>next boot</th><td>{}</td></tr><tr><th>boot</th><td>{}</td></tr>\
<tr><th>last phase</th><td>{}</td></tr><tr><th>hardware</th><td>{}</td></tr>{}</table>",
        esc(&v.mac),
        esc(&v.ip),
        esc(&v.network),
        esc(&v.image),
        esc(v.boots.as_deref().unwrap_or("nothing (not answered)")),
        v.boot,
        v.last_phase.unwrap_or("·"),
        esc(&hardware_cell(v)),
        power.map_or(String::new(), |p| format!(
            "<tr><th>power</th><td id=\"power\">{}</td></tr>",
            esc(&p)
        )) + &last_error.map_or(String::new(), |e| format!(
            "<tr><th>last error</th><td id=\"last-error\" class=\"failed\">{}</td></tr>",
            esc(&e)
        )),
        st = v.state,
    );

    // This boot's phases: when each was reached and how long the step from the one before took.
    h.push_str("<h2>This boot</h2><table id=\"phases\"><tr><th>phase</th><th>reached</th><th>since start</th><th>step</th></tr>");
    let start = rec.started();
    let mut prev: Option<Timestamp> = None;
    for (p, t) in &rec.phases {
        let since = start.map_or(0.0, |st| t.duration_since(st).as_secs_f64());
        let step = prev.map_or(0.0, |pt| t.duration_since(pt).as_secs_f64());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{t}</td><td class=\"p\">+{since:.1}s</td><td class=\"p\">{step:.1}s</td></tr>",
            p.as_str()
        );
        prev = Some(*t);
    }
    if rec.phases.is_empty() {
        h.push_str(
            "<tr><td colspan=\"4\" class=\"idle\">not booted since the server started</td></tr>",
        );
    }
    h.push_str("</table>");
    let earlier = v
        .mac
        .parse::<crate::boot::MacAddr>()
        .ok()
        .map(|m| s.plane.phases.earlier(&m))
        .unwrap_or_default();
    if !earlier.is_empty() {
        h.push_str("<h2>Earlier boots</h2><table id=\"history\"><tr><th>boot</th><th>started</th><th>last phase</th><th>took</th></tr>");
        for r in &earlier {
            let (first, last) = (r.started(), r.phases.iter().max_by_key(|(_, t)| **t));
            let took = match (first, last) {
                (Some(a), Some((_, b))) => format!("{:.1}s", b.duration_since(a).as_secs_f64()),
                _ => "·".into(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"p\">{took}</td></tr>",
                r.boot,
                first.map_or("·".to_string(), |t| t.to_string()),
                if r.completed() { "booted" } else { "booting" },
                r.latest().map_or("·", |p| p.as_str()),
            );
        }
        h.push_str("</table>");
    }
    if let Some(cb) = &v.callback {
        let _ = write!(
            h,
            "<p>Called back at {} as {} (instance {}).</p>",
            esc(&cb.at),
            esc(cb.hostname.as_deref().unwrap_or("?")),
            esc(cb.instance_id.as_deref().unwrap_or("?"))
        );
    }
    if !v.local_disks.is_empty() {
        h.push_str("<h2>Local disks</h2><table><tr><th>name</th><th>disk</th><th>mount</th><th>outcome</th><th>detail</th></tr>");
        for d in &v.local_disks {
            let f = |k: &str| esc(d.get(k).and_then(|x| x.as_str()).unwrap_or("·"));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f("name"),
                f("disk"),
                f("mountPath"),
                f("outcome"),
                f("detail")
            );
        }
        h.push_str("</table>");
    }

    // The console: the captured tail now, then refreshed in place (a few lines of script; nothing loaded).
    h.push_str("<h2>Console</h2>");
    match s.plane.consoles() {
        None => h.push_str(
            "<p class=\"idle\">console capture is off (beowulf standalone --consoles boot|always)</p>",
        ),
        Some(logs) => {
            let tail = logs
                .existing(&v.name)
                .map(|l| l.tail(PAGE_CONSOLE_LINES))
                .unwrap_or_default();
            h.push_str("<pre id=\"console\">");
            for l in &tail {
                h.push_str(&esc(l));
                h.push('\n');
            }
            if tail.is_empty() {
                h.push_str("(nothing captured yet)");
            }
            let _ = write!(
                h,
                "</pre><script>(function(){{var c=document.getElementById('console');\
setInterval(function(){{fetch('/api/hosts/{n}/console?lines={PAGE_CONSOLE_LINES}').then(function(r){{\
return r.ok?r.text():null}}).then(function(t){{if(t){{var end=c.scrollTop+c.clientHeight>=c.scrollHeight-4;\
c.textContent=t;if(end)c.scrollTop=c.scrollHeight}}}}).catch(function(){{}})}},2000)}})();</script>"
            );
        }
    }
    h.push_str("</body></html>\n");
    Html(h).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start: i64, offsets: &[(Phase, i64)]) -> BootRecord {
        BootRecord {
            boot: 1,
            phases: offsets
                .iter()
                .map(|(p, s)| (*p, Timestamp::from_second(start + s).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn the_wave_chart_has_a_line_per_phase_reached_with_every_host_counted() {
        assert_eq!(wave_chart(&[BootRecord::default()]), "");
        let records: Vec<BootRecord> = (0..1000)
            .map(|i| {
                record(
                    1_800_000_000 + i % 7,
                    &[(Phase::DhcpOffer, 0), (Phase::Kernel, 2 + i % 5)],
                )
            })
            .chain([BootRecord::default()])
            .collect();
        let svg = wave_chart(&records);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("data-phase=\"dhcp-offer\" data-hosts=\"1000\""));
        assert!(svg.contains("data-phase=\"kernel\" data-hosts=\"1000\""));
        // Sampled: at most CHART_POINTS steps (two points each) plus the origin and the right edge per line.
        for line in svg.split("points=\"").skip(1) {
            let pts = line.split('"').next().unwrap().split(' ').count();
            assert!(pts <= 2 * CHART_POINTS + 2, "{pts}");
        }
        // The last step reaches the top: every host counted.
        assert!(svg.contains(",0.0\""), "{svg}");
    }

    #[test]
    fn escaping_keeps_markup_out() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
