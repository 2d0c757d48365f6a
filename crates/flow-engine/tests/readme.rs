//! The README's shortest complete program is `examples/hello.rs`, which
//! `cargo test` runs: this keeps the README's copy the same.

#[test]
fn the_readme_shows_the_hello_example() {
    let example = include_str!("../examples/hello.rs");
    let readme = include_str!("../../../README.md");
    let start = example.find("use ").expect("the example has code");
    let end = example
        .find("// `cargo test` runs the example too")
        .expect("the example ends with its test");
    let code = example[start..end].trim_end();
    assert!(
        readme.contains(&format!("```rust\n{code}\n```")),
        "README.md's \"Using flow as a library\" must show crates/flow-engine/examples/hello.rs \
         (from its first `use` to its test) verbatim"
    );
}
