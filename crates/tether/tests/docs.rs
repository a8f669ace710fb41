//! The README and docs/ are read on their own, from a clone or on the web: every relative link
//! must name a file inside the repository.

use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The targets of `[text](target)` links in `markdown`, anchors and titles left out.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.to_string());
        rest = &rest[end..];
    }
    targets
}

#[test]
fn relative_links_in_the_readme_and_docs_stay_inside_the_repository_and_resolve() {
    let root = repository();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("a docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("a readable page");
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            let resolved = page.parent().unwrap().join(path);
            let inside = resolved.canonicalize().is_ok_and(|p| p.starts_with(&root));
            if !inside {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links outside the repository or to nothing: {broken:#?}"
    );
}

/// The first four cells of each row of the settings table: key, flag, variable, default.
fn settings_rows(markdown: &str) -> Vec<Vec<String>> {
    markdown
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .take(4)
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn the_configuration_page_lists_every_setting_with_its_flag_variable_and_default() {
    use tether_server::config::SETTINGS;
    let page = repository().join("docs/configuration.md");
    let text = std::fs::read_to_string(&page).expect("docs/configuration.md");
    let expected: Vec<Vec<String>> = SETTINGS
        .iter()
        .map(|s| {
            let default = match s.default_text().as_str() {
                "none" => "none".to_string(),
                text => format!("`{text}`"),
            };
            vec![
                format!("`{}`", s.key),
                format!("`--{} {}`", s.flag, s.value_name),
                format!("`{}`", s.env),
                default,
            ]
        })
        .collect();
    let wanted: Vec<String> = expected
        .iter()
        .map(|row| format!("| {} | ... |", row.join(" | ")))
        .collect();
    assert_eq!(
        settings_rows(&text),
        expected,
        "{} must list tether_server::config::SETTINGS in order, as:\n{}",
        page.display(),
        wanted.join("\n")
    );
}
