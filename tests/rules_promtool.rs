//! The alert and recording rules pass promtool's checks and their unit
//! tests, and every alert links to a section of the runbooks that exists.
//!
//! promtool comes from the Debian package `prometheus`; without it these
//! tests fail and say how to install it, rather than skip.

use std::path::{Path, PathBuf};
use std::process::Command;

const RULES: &str = "deploy/prometheus/alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yaml";
const RUNBOOKS: &str = "docs/runbooks.md";

#[test]
fn promtool_accepts_the_rules() {
    run_promtool(&["check", "rules", RULES]);
}

#[test]
fn rule_unit_tests_pass() {
    run_promtool(&["test", "rules", RULE_TESTS]);
}

#[test]
fn every_alert_links_to_a_runbook_section() {
    let rules = read(RULES);
    let anchors = heading_anchors(&read(RUNBOOKS));
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("runbook_url:"))
        .map(str::trim)
        .collect();
    let alerts = rules
        .lines()
        .filter(|line| line.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(
        links.len(),
        alerts,
        "every alert needs exactly one runbook_url"
    );
    for link in links {
        let (page, anchor) = link.split_once('#').unwrap_or((link, ""));
        assert!(
            page.ends_with("/docs/runbooks.md"),
            "{link} is not the runbooks page"
        );
        assert!(
            anchors.contains(&anchor.to_string()),
            "{link}: no heading `{anchor}`"
        );
    }
}

fn run_promtool(args: &[&str]) {
    let promtool = find_program("promtool");
    let output = Command::new(promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|c| c.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not on PATH; install it with: apt-get install prometheus")
        })
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// The anchors GitHub gives the `##` headings of a Markdown page: lower
/// case, spaces as hyphens, other punctuation dropped.
fn heading_anchors(markdown: &str) -> Vec<String> {
    let headings = markdown.lines().filter_map(|line| line.strip_prefix("## "));
    headings
        .map(|heading| {
            let kept = heading
                .trim()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-');
            kept.map(|c| {
                if c == ' ' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
        })
        .collect()
}
