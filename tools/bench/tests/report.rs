//! The runner's pure parts: statistics, goals, the markdown table and JSON, /proc parsing, the
//! failover gap. (The measurements themselves need root and run only from `mpbond-bench`.)

use mpbond_bench::machine::{Machine, cpu_model, mem_total_kib, rfc3339_utc};
use mpbond_bench::measure::longest_gap;
use mpbond_bench::procfs::{parse_rss_kib, parse_schedstat_ns, parse_stat_ticks};
use mpbond_bench::report::{Cell, Goal, Met, Report, Row, fmt_num};
use mpbond_bench::stats::{Summary, quantile, quantile_sorted};

#[test]
fn summary_gives_median_extremes_and_quartiles() {
    let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
    assert_eq!(
        (s.n, s.median, s.min, s.max, s.q1, s.q3),
        (5, 3.0, 1.0, 5.0, 2.0, 4.0)
    );
    let even = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
    assert_eq!(even.median, 2.5);
    assert_eq!(Summary::of(&[f64::NAN, 7.0]).unwrap().n, 1);
    assert!(Summary::of(&[]).is_none());
    assert!(Summary::of(&[f64::NAN]).is_none());
}

#[test]
fn quantiles_interpolate_between_ranks() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert!((quantile_sorted(&v, 0.99) - 99.01).abs() < 1e-9);
    assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.0), 1.0);
    assert_eq!(quantile(&[3.0, 1.0, 2.0], 1.0), 3.0);
    assert!(quantile(&[], 0.5).is_nan());
}

fn measured(v: &[f64]) -> Cell {
    Cell::from_samples(v.to_vec(), "")
}

fn row(metric: &str, m: Cell, k: Cell, goal: Goal) -> Row {
    Row {
        id: "P9".into(),
        metric: metric.into(),
        unit: "u".into(),
        mpbond: m,
        kernel: k,
        goal,
    }
}

#[test]
fn goals_are_judged_on_medians() {
    let at_least = Goal::RatioAtLeast {
        min: 0.5,
        stretch: Some(0.8),
    };
    let r = row(
        "a",
        measured(&[40.0, 60.0, 50.0]),
        measured(&[100.0]),
        at_least.clone(),
    );
    assert_eq!(r.ratio(), Some(0.5));
    assert_eq!(r.met(&[]), Met::Yes);
    let r = row("a", measured(&[49.0]), measured(&[100.0]), at_least.clone());
    assert_eq!(r.met(&[]), Met::No);
    let not_yet = Cell::NotYet { reason: "x".into() };
    assert_eq!(
        row("a", not_yet.clone(), measured(&[1.0]), at_least).met(&[]),
        Met::Unknown
    );

    let gap = Goal::AtMost {
        max: 50.0,
        below_kernel: true,
    };
    assert_eq!(
        row("g", measured(&[40.0]), measured(&[300.0]), gap.clone()).met(&[]),
        Met::Yes
    );
    assert_eq!(
        row("g", measured(&[40.0]), measured(&[30.0]), gap.clone()).met(&[]),
        Met::No
    );
    assert_eq!(
        row("g", measured(&[60.0]), not_yet.clone(), gap).met(&[]),
        Met::No
    );

    let added = Goal::AddedAtMost { max: 50.0 };
    assert_eq!(
        row("l", measured(&[140.0]), measured(&[100.0]), added.clone()).met(&[]),
        Met::Yes
    );
    assert_eq!(
        row("l", measured(&[160.0]), measured(&[100.0]), added).met(&[]),
        Met::No
    );

    let base = row("base", measured(&[2.0]), Cell::None, Goal::None);
    let flat = |v| {
        row(
            "n",
            measured(&[v]),
            Cell::None,
            Goal::FlatVs {
                base: "base".into(),
                factor: 2.0,
            },
        )
    };
    let all = [base.clone(), flat(3.9)];
    assert_eq!(all[1].met(&all), Met::Yes);
    assert_eq!(flat(4.1).met(&[base]), Met::No);
    assert_eq!(
        row("n", measured(&[1.0]), Cell::None, Goal::None).met(&[]),
        Met::NoGoal
    );
}

#[test]
fn failed_runs_are_counted_not_hidden() {
    let c = Cell::from_results(vec![Ok(1.0), Err("boom".into()), Ok(3.0)]);
    match &c {
        Cell::Measured { summary, note, .. } => {
            assert_eq!(summary.n, 2);
            assert!(note.contains("1 of 3 runs failed: boom"), "{note}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Cell::from_results(vec![Err("a".into()), Err("b".into())]),
        Cell::Failed { error: "a".into() }
    );
}

#[test]
fn markdown_table_has_both_sides_ratio_goal_and_verdict() {
    let report = Report {
        machine: Machine {
            nproc: 2,
            cpu_model: "Test CPU".into(),
            mem_mib: 1024,
            kernel: "6.1.0".into(),
            loadavg: "0.1 0.2 0.3".into(),
        },
        started: "2026-11-24T23:00:00Z".into(),
        command: "mpbond-bench --quick".into(),
        runs: 1,
        notes: vec!["how".into()],
        rows: vec![
            row(
                "goodput | down",
                measured(&[400.0, 500.0, 600.0]),
                measured(&[800.0]),
                Goal::RatioAtLeast {
                    min: 0.5,
                    stretch: None,
                },
            ),
            row(
                "gap",
                Cell::NotYet {
                    reason: "needs MPTCP".into(),
                },
                measured(&[250.0]),
                Goal::RatioAtMost { max: 0.5 },
            ),
        ],
    };
    let md = report.to_markdown();
    assert!(
        md.contains("| id | metric | mpbond | kernel baseline | ratio | goal | met? |"),
        "{md}"
    );
    assert!(
        md.contains("| P9 | goodput \\| down | 500 u (400–600, n=3) | 800 u (n=1) | 0.62× | ≥ 0.5× | yes |"),
        "{md}"
    );
    assert!(
        md.contains("not yet measurable: needs MPTCP | 250 u (n=1) | — | ≤ 0.5× | — |"),
        "{md}"
    );
    assert!(
        md.contains("2 × Test CPU, 1024 MiB")
            && md.contains("Linux 6.1.0")
            && md.contains("2026-11-24T23:00:00Z")
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["rows"][0]["mpbond"]["samples"][2], 600.0);
    assert_eq!(json["rows"][1]["mpbond"]["state"], "not_yet");
    assert_eq!(json["machine"]["nproc"], 2);
}

#[test]
fn numbers_keep_about_three_digits() {
    assert_eq!(fmt_num(912.4), "912");
    assert_eq!(fmt_num(12.34), "12.3");
    assert_eq!(fmt_num(1.234), "1.23");
    assert_eq!(fmt_num(0.01234), "0.012");
}

#[test]
fn proc_files_parse() {
    let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 37 0 0 20 0 4 0 100 0 0";
    assert_eq!(parse_stat_ticks(stat), Some(287));
    assert_eq!(parse_stat_ticks("garbage"), None);
    assert_eq!(parse_schedstat_ns("123456789 2000 15\n"), Some(123_456_789));
    assert_eq!(parse_rss_kib("Name:\tmpbond\nVmRSS:\t   10240 kB\n"), Some(10240));
    assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    assert_eq!(
        cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n").as_deref(),
        Some("AMD EPYC 7B13")
    );
    assert_eq!(
        mem_total_kib("MemTotal:       24575000 kB\nMemFree: 1 kB\n"),
        Some(24_575_000)
    );
}

#[test]
fn dates_are_utc_rfc3339() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339_utc(1_795_989_845), "2026-11-29T22:04:05Z");
}

#[test]
fn failover_gap_starts_at_the_impairment() {
    // Data every 10 ms, impairment at 1.005, nothing until 1.300, then data again.
    let mut recv: Vec<f64> = (0..=100).map(|i| f64::from(i) * 0.01).collect();
    recv.extend((0..50).map(|i| 1.3 + f64::from(i) * 0.01));
    let g = longest_gap(1.005, &recv, None);
    assert!((g - 0.295).abs() < 1e-9, "{g}");
    // Never recovered: the gap runs to the end of the reading.
    let g = longest_gap(1.005, &recv[..101], Some(3.0));
    assert!((g - 1.995).abs() < 1e-9, "{g}");
    // No outage: the gaps are the usual spacing.
    assert!((longest_gap(0.5, &recv[..101], None) - 0.01).abs() < 1e-6);
}
