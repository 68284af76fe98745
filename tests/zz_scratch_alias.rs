use std::time::Instant;
#[test]
fn t() {
    let mut lines = vec!["a:".to_string(), "  lol0: &lol0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]".to_string()];
    for i in 1..10 {
        lines.push(format!(
            "  lol{i}: &lol{i} [{}]",
            vec![format!("*lol{}", i - 1); 9].join(", ")
        ));
    }
    let text = lines.join("\n");
    let base = foobar_provision::inventory::yaml_options();
    for (name, opts) in [
        ("current", base.clone()),
        ("replay 50k", {
            let mut o = base.clone();
            o.alias_limits.max_total_replayed_events = 50_000;
            o
        }),
        ("per-anchor 100", {
            let mut o = base.clone();
            o.alias_limits.max_alias_expansions_per_anchor = 100;
            o
        }),
    ] {
        let t0 = Instant::now();
        let r: Result<serde_json::Value, _> = serde_saphyr::from_str_with_options(&text, opts);
        let e = r.err().map(|e| {
            foobar_provision::diag::from_yaml_error(std::path::Path::new("x.yml"), &e).to_string()
        });
        println!("{name}: {:?} {:?}", t0.elapsed(), e);
    }
}
