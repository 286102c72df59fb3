//! CLAUDE.md as a reconciled resource, through the real binary on SQLite and PostgreSQL: the plan
//! shows the diff, apply writes it, the user's text outside the markers is kept byte for byte, a second
//! plan is empty, an edit inside the markers is drift and is repaired, the budget is enforced, a missing
//! folder is a warning; `instructions render` and `instructions adapt`.

mod support;

use serde_json::Value;
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(
    claude_md_is_planned_applied_kept_and_repaired,
    over_the_budget_is_a_plan_error_naming_the_largest_layers,
    a_project_folder_missing_on_this_host_is_a_warning,
    render_prints_the_section_and_folders_next_to_state_override_layers,
    adapt_drafts_a_layer_and_never_overwrites_a_hand_written_one,
);

/// A project whose working copy is `proj/` in the workspace.
fn shop(ws: &Workspace, extra: &str) {
    let path = ws.path().join("proj");
    std::fs::create_dir_all(&path).unwrap();
    ws.write(
        "state/projects/shop.yaml",
        &format!(
            "name: shop\npath: {}\nservices:\n  - name: api\n  - name: web\nsecrets:\n  required: [project/shop/stripe_key]\nchecks: [\"cargo test\"]\n{extra}",
            path.display()
        ),
    );
}

const BEGIN: &str = "<!-- BEGIN supervisor";
const END: &str = "<!-- END supervisor -->\n";

async fn claude_md_is_planned_applied_kept_and_repaired(ws: Workspace) {
    shop(
        &ws,
        "instructions: |\n  Use the staging database for experiments.\n",
    );
    // The user's own CLAUDE.md, with bytes a naive rewrite would lose.
    let mine = "# My notes\r\n\n  keep  this  spacing \t\nÜmlauts and a trailing space \n";
    ws.write("proj/CLAUDE.md", mine);

    let plan = ws.ok(&["plan"], 0);
    assert!(
        plan.contains("~   instructions/shop")
            && plan.contains("(adopted: the section is appended, the file's text is kept)"),
        "{plan}"
    );
    for expected in [
        "+# Facts about project `shop`",
        "+| api | 3000 | — |",
        "+| web | 3001 | — |",
        "+- `project/shop/stripe_key`",
        "+Use the staging database for experiments.",
        "+<!-- source: .supervisor-core/20-tool-usage.md (built in) -->",
        "+    claude mcp add shop -- supervisor mcp --project shop",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in\n{plan}");
    }
    assert!(!plan.contains("sk_live"), "no secret values");
    ws.ok(&["apply", "--auto-approve"], 0);
    let written = ws.read("proj/CLAUDE.md");
    assert!(
        written.starts_with(mine),
        "the user's text is kept byte for byte"
    );
    assert!(written.ends_with(END), "{written}");
    ws.ok(&["plan", "--detailed-exitcode"], 0);

    // A port change shows up in CLAUDE.md in the same plan (facts come from the plan's own ports).
    shop(
        &ws,
        "port_range: 3000\ninstructions: |\n  Use the staging database for experiments.\n",
    );
    let edited = ws
        .read("state/projects/shop.yaml")
        .replace("  - name: web\n", "  - name: web\n  - name: worker\n");
    ws.write("state/projects/shop.yaml", &edited);
    let plan = ws.ok(&["plan"], 0);
    assert!(
        plan.contains("+   ports/shop/worker") && plan.contains("+| worker | 3002 | — |"),
        "{plan}"
    );
    ws.ok(&["apply", "--auto-approve"], 0);

    // Someone edits inside the markers, and adds text after them.
    let text = ws.read("proj/CLAUDE.md");
    let tampered = text.replace("# Working under the supervisor", "# Ignore all of this")
        + "\n## Mine, after\n";
    ws.write("proj/CLAUDE.md", &tampered);
    let plan = ws.ok(&["plan"], 0);
    assert!(
        plan.contains("instructions/shop")
            && plan.contains("(drifted: changed outside supervisor)"),
        "{plan}"
    );
    let status = ws.run(&["status", "--json"]);
    let report: Value = serde_json::from_str(&stdout(&status)).unwrap();
    let line = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "instructions/shop")
        .unwrap();
    assert_eq!(line["status"], "drifted");
    ws.ok(&["apply", "--auto-approve"], 0);
    let repaired = ws.read("proj/CLAUDE.md");
    assert!(!repaired.contains("Ignore all of this"));
    assert!(repaired.starts_with(mine) && repaired.ends_with(&format!("{END}\n## Mine, after\n")));
    ws.ok(&["plan", "--detailed-exitcode"], 0);
}

async fn over_the_budget_is_a_plan_error_naming_the_largest_layers(ws: Workspace) {
    ws.write("state/supervisor.yaml", "instructions: { budget: 5000 }\n");
    shop(&ws, "");
    let out = ws.run(&["plan"]);
    expect_code(&out, 1);
    let text = stdout(&out);
    assert!(
        text.contains("over the budget of 5000 (instructions.budget in supervisor.yaml); the largest layers: .supervisor-core/20-tool-usage.md (built in) ("),
        "{text}"
    );
    assert!(text.contains("Plan failed: 1 error"), "{text}");
    let out = ws.run(&["apply", "--auto-approve"]);
    expect_code(&out, 1);
    assert!(
        !ws.path().join("proj/CLAUDE.md").exists(),
        "nothing is written"
    );
    let status = ws.run(&["status"]);
    expect_code(&status, 1);
    assert!(
        stdout(&status)
            .lines()
            .any(|l| l.starts_with("instructions/shop") && l.contains("blocked")),
        "{}",
        stdout(&status)
    );
}

async fn a_project_folder_missing_on_this_host_is_a_warning(ws: Workspace) {
    ws.write(
        "state/projects/far.yaml",
        "name: far\npath: /nonexistent/supervisor-test/far\nservices:\n  - name: api\n",
    );
    let plan = ws.ok(&["plan"], 0);
    assert!(
        plan.contains("!   /nonexistent/supervisor-test/far does not exist on this host: its CLAUDE.md is not written"),
        "{plan}"
    );
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.ok(&["plan", "--detailed-exitcode"], 0);
}

async fn render_prints_the_section_and_folders_next_to_state_override_layers(ws: Workspace) {
    shop(&ws, "");
    ws.ok(&["apply", "--auto-approve"], 0);
    let section = ws.ok(&["instructions", "render", "shop"], 0);
    assert!(
        section.starts_with(BEGIN) && section.ends_with(END),
        "{section}"
    );
    assert!(section.contains("| api | 3000 | — |"), "{section}");
    let file = ws.read("proj/CLAUDE.md");
    assert_eq!(
        ws.ok(&["instructions", "render", "shop", "--file"], 0),
        file,
        "--file is what apply wrote"
    );

    // A folder next to state/ overrides a built-in layer by name and adds its own.
    ws.write(
        ".supervisor-core/20-tool-usage.md",
        "# Tools, our way\n\nAsk `get_port` first.\n",
    );
    ws.write(
        ".supervisor-core/70-house.md",
        "# House rules\n\nNo Fridays.\n",
    );
    let section = ws.ok(&["instructions", "render", "shop"], 0);
    assert!(section.contains("# Tools, our way") && section.contains("No Fridays."));
    assert!(
        !section.contains("20-tool-usage.md (built in)"),
        "{section}"
    );
    let plan = ws.ok(&["plan"], 0);
    assert!(plan.contains("+# Tools, our way"), "{plan}");

    // The meta section: core + meta layers + the fleet.
    let meta = ws.ok(&["instructions", "render", "--meta"], 0);
    assert!(
        meta.contains("# The meta supervisor") && meta.contains("- `shop` in "),
        "{meta}"
    );
    let json: Value =
        serde_json::from_str(&ws.ok(&["instructions", "render", "shop", "--json"], 0)).unwrap();
    assert_eq!(json["format_version"], "1");
    assert!(json["layers"].as_array().unwrap().len() >= 7);
}

async fn adapt_drafts_a_layer_and_never_overwrites_a_hand_written_one(ws: Workspace) {
    shop(
        &ws,
        "instructions: |\n  Hand-written: deploy on Tuesdays only.\n",
    );
    ws.write(
        "proj/Cargo.toml",
        "[package]\nname = \"shop\"\nversion = \"0.1.0\"\n",
    );
    ws.write("proj/src/main.rs", "fn main() {}\n");
    let proj = ws.path().join("proj");
    let proj = proj.to_str().unwrap();
    let draft = ws.ok(&["instructions", "adapt", proj], 0);
    assert!(
        draft.contains("Written in Rust.") && draft.contains("- `cargo test`"),
        "{draft}"
    );
    let out = ws.run(&["instructions", "adapt", proj, "--project", "shop"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("has hand-written instructions") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert!(ws.read("state/projects/shop.yaml").contains("Tuesdays"));
    ws.ok(
        &[
            "instructions",
            "adapt",
            proj,
            "--project",
            "shop",
            "--force",
        ],
        0,
    );
    let state = ws.read("state/projects/shop.yaml");
    assert!(
        !state.contains("Tuesdays") && state.contains("cargo clippy"),
        "{state}"
    );
    ws.ok(&["validate"], 0);
    // A drafted layer is replaced without --force.
    ws.ok(&["instructions", "adapt", proj, "--project", "shop"], 0);
}
