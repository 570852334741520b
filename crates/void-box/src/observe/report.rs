//! A saved run as a self-contained HTML page: a timeline per stage (boot,
//! model, tools) and a summary table. No scripts, fonts or remote assets,
//! so it opens anywhere, offline.

use super::timeline::{SegmentKind, Timeline};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Renders `timeline` as an HTML page titled `title`.
pub fn render_html(title: &str, timeline: &Timeline) -> String {
    const LABEL_W: f64 = 180.0;
    const BAR_W: f64 = 760.0;
    const ROW_H: f64 = 34.0;
    let total = timeline.duration_ms.max(1) as f64;
    let x = |ms: u64| LABEL_W + ms as f64 / total * BAR_W;
    let height = ROW_H * timeline.stages.len() as f64 + 40.0;

    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" role="img" aria-label="timeline">"#,
        w = LABEL_W + BAR_W + 20.0
    );
    for (row, stage) in timeline.stages.iter().enumerate() {
        let y = row as f64 * ROW_H + 8.0;
        let end = stage.end_ms.unwrap_or(timeline.duration_ms);
        let class = match stage.success {
            Some(true) => "ok",
            Some(false) => "failed",
            None => "open",
        };
        svg.push_str(&format!(
            r#"<text x="0" y="{ty}" class="label">{name}</text><rect class="stage {class}" x="{x0:.1}" y="{y}" width="{w:.1}" height="22" rx="3"><title>{name}: {dur}</title></rect>"#,
            ty = y + 16.0,
            name = escape(&stage.name),
            x0 = x(stage.start_ms),
            w = (x(end) - x(stage.start_ms)).max(1.0),
            dur = seconds(end.saturating_sub(stage.start_ms)),
        ));
        for seg in &stage.segments {
            let kind = match seg.kind {
                SegmentKind::Boot => "boot",
                SegmentKind::Llm => "llm",
                SegmentKind::Tool => "tool",
            };
            let error = if seg.is_error { " error" } else { "" };
            svg.push_str(&format!(
                r#"<rect class="seg {kind}{error}" x="{x0:.1}" y="{y1}" width="{w:.1}" height="14" rx="2"><title>{label}: {dur}</title></rect>"#,
                x0 = x(seg.start_ms),
                y1 = y + 4.0,
                w = (x(seg.end_ms) - x(seg.start_ms)).max(1.5),
                label = escape(&seg.label),
                dur = seconds(seg.end_ms.saturating_sub(seg.start_ms)),
            ));
        }
    }
    let axis_y = ROW_H * timeline.stages.len() as f64 + 24.0;
    for tick in 0..=4 {
        let ms = timeline.duration_ms * tick / 4;
        svg.push_str(&format!(
            r#"<text x="{:.1}" y="{axis_y}" class="tick">{}</text>"#,
            x(ms) - 10.0,
            seconds(ms)
        ));
    }
    svg.push_str("</svg>");

    let mut rows = String::new();
    for stage in &timeline.stages {
        let end = stage.end_ms.unwrap_or(timeline.duration_ms);
        let (status, class) = match stage.success {
            Some(true) => ("succeeded", "ok"),
            Some(false) => ("failed", "failed"),
            None => ("unfinished", "open"),
        };
        let count = |k: SegmentKind| stage.segments.iter().filter(|s| s.kind == k).count();
        rows.push_str(&format!(
            "<tr class=\"stage-row\"><td>{}</td><td class=\"{class}\">{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            escape(&stage.name),
            seconds(end.saturating_sub(stage.start_ms)),
            count(SegmentKind::Llm),
            count(SegmentKind::Tool),
            stage.tokens.0,
            stage.tokens.1,
            stage.cost_usd.map_or("–".into(), |c| format!("${c:.4}")),
            escape(stage.error.as_deref().unwrap_or("")),
        ));
    }
    let (input, output) = timeline
        .stages
        .iter()
        .fold((0, 0), |(i, o), s| (i + s.tokens.0, o + s.tokens.1));
    let trace = timeline
        .trace_id
        .as_deref()
        .map(|t| format!(" · trace <code>{}</code>", escape(t)))
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · void-box run</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
.meta {{ color: #555; margin-bottom: 16px; }}
svg .label {{ font-size: 13px; fill: #1d1d1f; }}
svg .tick {{ font-size: 11px; fill: #777; }}
svg .stage {{ fill: #eef0f3; stroke: #c9ced6; }}
svg .stage.failed {{ stroke: #d33; stroke-width: 2; }}
svg .seg.boot {{ fill: #9aa5b1; }}
svg .seg.llm {{ fill: #4a7bd0; }}
svg .seg.tool {{ fill: #3aa876; }}
svg .seg.error {{ fill: #d9534f; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: -1px; border-radius: 2px; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
th, td {{ padding: 4px 12px; border-bottom: 1px solid #e3e3e3; text-align: left; }}
td.ok {{ color: #2a7a3b; }} td.failed {{ color: #c0392b; font-weight: 600; }}
</style></head><body>
<h1>{title}</h1>
<div class="meta">{n} stage(s) · {dur} · {input} tokens in / {output} out{trace}</div>
<div class="legend"><span style="background:#9aa5b1"></span>boot<span style="background:#4a7bd0"></span>model<span style="background:#3aa876"></span>tool<span style="background:#d9534f"></span>failed tool</div>
{svg}
<table><thead><tr><th>stage</th><th>status</th><th>duration</th><th>model calls</th><th>tool calls</th><th>tokens in / out</th><th>cost</th><th>error</th></tr></thead>
<tbody>{rows}</tbody></table>
</body></html>
"#,
        title = escape(title),
        n = timeline.stages.len(),
        dur = seconds(timeline.duration_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_every_stage_and_escapes() {
        let run = r#"{"event": "stage_started", "box_name": "a<b>", "ts_ms": 0}
{"event": "stage_finished", "box_name": "a<b>", "success": true, "duration": 1500, "error": null, "ts_ms": 1500}
{"event": "stage_started", "box_name": "second", "ts_ms": 1500}
{"event": "stage_finished", "box_name": "second", "success": false, "duration": 500, "error": "x & y", "ts_ms": 2000}"#;
        let html = render_html("demo", &Timeline::from_jsonl(run));
        assert!(html.contains("<td>a&lt;b&gt;</td>"));
        assert!(html.contains("<td>second</td><td class=\"failed\">failed</td>"));
        assert!(html.contains("x &amp; y"));
        assert_eq!(html.matches("class=\"stage-row\"").count(), 2);
        assert!(!html.contains("<script"), "self-contained and static");
    }
}
