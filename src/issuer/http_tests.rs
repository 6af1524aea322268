//! The HTTP issuer's pure parts: trace ids, which token a revocation deletes, orphans,
//! usage after the cutover.

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn listed(id: &str, prefix: &str, created: &str, used: Option<&str>) -> PlatformToken {
    PlatformToken {
        id: id.into(),
        prefix: prefix.into(),
        created_at: at(created),
        last_used_at: used.map(at),
    }
}

#[test]
fn traceparent_carries_the_rotation_trace_id() {
    let tp = traceparent("0af7651916cd43dd8448eb211c80319c");
    let parts: Vec<_> = tp.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    );
    assert_eq!(parts[2].len(), 16);
}

#[test]
fn a_trace_id_that_is_not_one_is_replaced_by_a_fresh_one() {
    let bad = [
        "",
        "0af7651916cd43dd8448eb211c80319",
        "0AF7651916CD43DD8448EB211C80319C",
        "00000000000000000000000000000000",
        "0af7651916cd43dd8448eb211c80319c\r\nx-evil: 1",
        "zzf7651916cd43dd8448eb211c80319c",
    ];
    for value in bad {
        let tp = traceparent(value);
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{value:?}: {tp}");
        assert!(is_trace_id(parts[1]), "{value:?}: {tp}");
        assert_ne!(parts[1], value);
        assert!(http::HeaderValue::from_str(&tp).is_ok(), "{value:?}");
    }
}

#[test]
fn a_revocation_deletes_the_one_token_with_the_prefix_or_the_known_one_among_several() {
    let tokens = [
        listed("a", "glpat-XY", "2026-01-01T00:00:00Z", None),
        listed("b", "glpat-XY", "2026-01-02T00:00:00Z", None),
        listed("c", "zzzzzzzz", "2026-01-02T00:00:00Z", None),
    ];
    assert_eq!(
        pick_by_prefix(&tokens, "zzzzzzzz", None),
        Pick::One("c".into())
    );
    assert_eq!(
        pick_by_prefix(&tokens, "zzzzzzzz", Some("a")),
        Pick::One("c".into())
    );
    assert_eq!(
        pick_by_prefix(&tokens, "glpat-XY", Some("b")),
        Pick::One("b".into())
    );
    assert_eq!(
        pick_by_prefix(&tokens, "glpat-XY", Some("x")),
        Pick::Ambiguous
    );
    assert_eq!(pick_by_prefix(&tokens, "glpat-XY", None), Pick::Ambiguous);
    assert_eq!(pick_by_prefix(&tokens, "nothere", Some("a")), Pick::None);
}

#[test]
fn orphans_are_tokens_created_in_the_window_that_no_secret_holds() {
    let tokens = [
        listed("old", "aaaaaaaa", "2026-01-01T00:00:00Z", None),
        listed("held", "bbbbbbbb", "2026-01-02T00:00:10Z", None),
        listed("orphan", "cccccccc", "2026-01-02T00:00:11Z", None),
    ];
    let orphans = unheld_since(&tokens, at("2026-01-02T00:00:00Z"), &["bbbbbbbb".into()]);
    assert_eq!(
        orphans.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["orphan"]
    );
}

#[test]
fn only_use_after_the_cutover_counts_as_consumer_use() {
    let current = Token::from_plaintext("newtokenXYZ".into());
    let cutover = at("2026-01-02T00:00:00Z");
    let before = [listed(
        "n",
        "newtoken",
        "2026-01-01T23:59:00Z",
        Some("2026-01-01T23:59:30Z"),
    )];
    let after = [listed(
        "n",
        "newtoken",
        "2026-01-01T23:59:00Z",
        Some("2026-01-02T00:00:05Z"),
    )];
    assert!(
        !used_since_cutover(&before, &current, cutover),
        "the operator's verify call"
    );
    assert!(used_since_cutover(&after, &current, cutover));
}

#[test]
fn issuer_errors_never_carry_a_token() {
    let e = IssuerError::WrongWorkspace {
        expected: "ws-a".into(),
        got: "ws-b".into(),
    };
    assert!(e.to_string().contains("nothing was written"));
    assert_eq!(e.reason(), "IssuerWrongWorkspace");
}
