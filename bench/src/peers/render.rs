//! The side-by-side report: the table and the one JSON line, from the figures' rows.

use serde_json::{Map, Value, json};

use super::figures::{Row, Side, rows};

fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
}

/// The side-by-side table: figure | tokenwarden | ESO | tokenwarden/ESO.
pub fn table(rows: &[Row]) -> String {
    let header = ["figure", "tokenwarden", "ESO", "tokenwarden/ESO"];
    let mut lines: Vec<[String; 4]> = vec![header.map(String::from)];
    for row in rows {
        let d = row.decimals;
        lines.push([
            row.label.to_string(),
            format!("{:.d$}", row.tokenwarden),
            format!("{:.d$}", row.eso),
            fmt_ratio(row.ratio()),
        ]);
    }
    let width = |c: usize| lines.iter().map(|l| l[c].len()).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2), width(3)];
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        out.push_str(&format!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} |\n",
            l[0],
            l[1],
            l[2],
            l[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        ));
        if i == 0 {
            let dashes = widths.map(|w| "-".repeat(w));
            out.push_str(&format!(
                "|-{}-|-{}:|-{}:|-{}:|\n",
                dashes[0], dashes[1], dashes[2], dashes[3]
            ));
        }
    }
    out
}

fn round3(x: f64) -> Value {
    json!((x * 1000.0).round() / 1000.0)
}

/// The one JSON line: n, each figure with both values and the ratio, the by-verb breakdowns.
pub fn report(n: usize, idle_s: u64, tw: &Side, eso: &Side) -> Value {
    let mut out = Map::new();
    out.insert("n".into(), json!(n));
    out.insert("idle_s".into(), json!(idle_s));
    for row in rows(n, tw, eso) {
        out.insert(
            row.key.into(),
            json!({
                "tokenwarden": round3(row.tokenwarden),
                "eso": round3(row.eso),
                "ratio": row.ratio().map(round3),
            }),
        );
    }
    out.insert(
        "requests_by_verb".into(),
        json!({ "tokenwarden": tw.requests, "eso": eso.requests }),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::figures::tests::side;

    #[test]
    fn the_table_has_one_aligned_line_per_figure_and_a_dash_for_no_ratio() {
        let tw = side(18.0, &[("POST secrets", 20)], &[], 4.0);
        let eso = side(15.0, &[("POST secrets", 40)], &[], 2.0);
        let rows = rows(10, &tw, &eso);
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), rows.len() + 2);
        assert!(lines[0].contains("tokenwarden/ESO"));
        assert!(
            lines.iter().all(|l| l.len() == lines[0].len()),
            "aligned:\n{table}"
        );
        let converge = lines.iter().find(|l| l.contains("converge (s)")).unwrap();
        assert!(
            converge.contains("18.0") && converge.contains("15.0") && converge.contains("1.20")
        );
        let writes = lines
            .iter()
            .find(|l| l.contains("converge: writes / object"))
            .unwrap();
        assert!(writes.contains("0.50"), "{writes}");
        let idle = lines.iter().find(|l| l.contains("idle: writes")).unwrap();
        assert!(
            idle.trim_end_matches('|').trim_end().ends_with('-'),
            "{idle}"
        );
    }

    #[test]
    fn the_json_line_has_both_values_the_ratio_and_the_breakdowns() {
        let tw = side(18.0, &[("POST secrets", 20)], &[], 4.0);
        let eso = side(15.0, &[("POST secrets", 40)], &[], 2.0);
        let r = report(10, 120, &tw, &eso);
        assert_eq!(r["n"], 10);
        assert_eq!(r["converge_s"]["tokenwarden"], 18.0);
        assert_eq!(r["converge_s"]["eso"], 15.0);
        assert_eq!(r["converge_s"]["ratio"], 1.2);
        assert_eq!(r["mutating_per_object"]["ratio"], 0.5);
        assert_eq!(r["idle_writes"]["ratio"], Value::Null);
        assert_eq!(r["requests_by_verb"]["eso"]["converge"]["POST secrets"], 40);
        assert!(!serde_json::to_string(&r).unwrap().contains('\n'));
    }
}
