//! Cutting documents into chunks: the unit search returns and the embedder sees.
//!
//! - **Markdown** by ATX heading (`#`…`######`, not inside fenced code); each section's title is its
//!   heading path (`Guide > Install > Linux`). A section with nothing but its heading is left out (its
//!   heading lives on in its subsections' titles).
//! - **Code** by definition: lines that start a function, class, struct, impl, trait… at the shallowest
//!   indentation split the file (with the comments, doc comments, attributes and decorators directly
//!   above them); a piece still too long is split at the next level of definitions, and what remains
//!   too long is cut into windows of lines that overlap by [`OVERLAP_LINES`]. A chunk's title is its
//!   definition line.
//! - **Plain text** by paragraphs (blank-line separated), packed up to the size limit.
//!
//! Every chunk is at most [`MAX_CHUNK_CHARS`] characters (a single longer line is cut, and its pieces
//! that are only whitespace are dropped), keeps its 1-based inclusive line range in the document, holds
//! something other than whitespace, and has no leading or trailing blank lines. Chunking is
//! pure and deterministic; [`CHUNKER_VERSION`] changes whenever its output would, so documents are
//! re-chunked after an upgrade.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::store::DocumentKind;

/// Part of every document's content hash: bump it when chunk boundaries or titles change.
pub const CHUNKER_VERSION: u32 = 2;

/// The largest chunk, in characters (about 300–400 tokens of prose; the built-in model reads 256).
pub const MAX_CHUNK_CHARS: usize = 1500;

/// Lines shared by consecutive windows of a long definition.
pub const OVERLAP_LINES: usize = 5;

/// The longest title kept, in characters.
const MAX_TITLE_CHARS: usize = 160;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub title: Option<String>,
    pub text: String,
    /// 1-based, inclusive.
    pub line_start: usize,
    pub line_end: usize,
}

/// The kind of a file, by extension: markdown, code, or plain text for everything else.
pub fn kind_of(path: &Path) -> DocumentKind {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "md" | "markdown" | "mdx" | "mkd" => DocumentKind::Markdown,
        "rs" | "py" | "pyi" | "js" | "jsx" | "mjs" | "cjs" | "ts" | "tsx" | "go" | "java"
        | "kt" | "kts" | "scala" | "c" | "h" | "cc" | "cpp" | "hpp" | "cxx" | "cs" | "rb"
        | "php" | "swift" | "sh" | "bash" | "zsh" | "fish" | "sql" | "lua" | "pl" | "r" | "ex"
        | "exs" | "erl" | "hs" | "ml" | "clj" | "dart" | "vue" | "svelte" | "zig" | "nim"
        | "jl" | "ps1" | "proto" | "graphql" | "tf" => DocumentKind::Code,
        _ => DocumentKind::Text,
    }
}

/// Cuts `text` into chunks according to its kind.
pub fn chunk_document(kind: DocumentKind, text: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    // Character counts up to each line, so the size of any run of lines is one subtraction: sizes
    // are asked for again and again while packing and windowing.
    let mut before = Vec::with_capacity(lines.len() + 1);
    before.push(0);
    for l in &lines {
        before.push(before[before.len() - 1] + l.chars().count() + 1);
    }
    let mut out = Vec::new();
    let doc = Lines {
        lines: &lines,
        before: &before,
    };
    match kind {
        DocumentKind::Markdown => markdown(doc, &mut out),
        DocumentKind::Code => {
            // Which lines start a definition, and at what indentation: matched once per line.
            let defs: Vec<Option<usize>> = lines
                .iter()
                .map(|l| DEFINITION.is_match(l).then(|| indent_of(l)))
                .collect();
            code(doc, &defs, 0, lines.len(), None, 0, &mut out)
        }
        DocumentKind::Text => paragraphs(doc, 0, lines.len(), None, &mut out),
    }
    out
}

#[derive(Clone, Copy)]
struct Lines<'a> {
    lines: &'a [&'a str],
    /// `before[i]`: characters (each line's plus its line break) of the lines before line `i`.
    before: &'a [usize],
}

impl Lines<'_> {
    /// Characters of lines `[start, end)` joined by line breaks.
    fn chars(&self, start: usize, end: usize) -> usize {
        (self.before[end] - self.before[start]).saturating_sub(1)
    }

    /// Characters of line `i`.
    fn line_chars(&self, i: usize) -> usize {
        self.before[i + 1] - self.before[i] - 1
    }

    fn blank(&self, i: usize) -> bool {
        self.lines[i].trim().is_empty()
    }

    /// `[start, end)` without blank lines at either end.
    fn trim(&self, mut start: usize, mut end: usize) -> (usize, usize) {
        while start < end && self.blank(start) {
            start += 1;
        }
        while end > start && self.blank(end - 1) {
            end -= 1;
        }
        (start, end)
    }
}

fn title(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    Some(t.chars().take(MAX_TITLE_CHARS).collect())
}

/// Emits `[start, end)` as one chunk if it fits, otherwise as windows. Blank edges are trimmed.
fn emit(doc: Lines, start: usize, end: usize, title: &Option<String>, out: &mut Vec<Chunk>) {
    let (start, end) = doc.trim(start, end);
    if start == end {
        return;
    }
    if doc.chars(start, end) <= MAX_CHUNK_CHARS {
        out.push(Chunk {
            title: title.clone(),
            text: doc.lines[start..end].join("\n"),
            line_start: start + 1,
            line_end: end,
        });
    } else {
        windows(doc, start, end, title, out);
    }
}

/// Windows of whole lines up to the size limit, overlapping by [`OVERLAP_LINES`]; a line longer than
/// the limit on its own is cut into pieces.
fn windows(doc: Lines, start: usize, end: usize, title: &Option<String>, out: &mut Vec<Chunk>) {
    let mut s = start;
    while s < end {
        if doc.line_chars(s) > MAX_CHUNK_CHARS {
            let chars: Vec<char> = doc.lines[s].chars().collect();
            // A piece of nothing but whitespace is no chunk (a long blank line is none at all).
            for piece in chars
                .chunks(MAX_CHUNK_CHARS)
                .filter(|p| !p.iter().all(|c| c.is_whitespace()))
            {
                out.push(Chunk {
                    title: title.clone(),
                    text: piece.iter().collect(),
                    line_start: s + 1,
                    line_end: s + 1,
                });
            }
            s += 1;
            continue;
        }
        let mut e = s + 1;
        while e < end
            && doc.line_chars(e) <= MAX_CHUNK_CHARS
            && doc.chars(s, e + 1) <= MAX_CHUNK_CHARS
        {
            e += 1;
        }
        let (ts, te) = doc.trim(s, e);
        if ts < te {
            out.push(Chunk {
                title: title.clone(),
                text: doc.lines[ts..te].join("\n"),
                line_start: ts + 1,
                line_end: te,
            });
        }
        if e >= end {
            break;
        }
        // Overlap, but always move forward.
        s = e.saturating_sub(OVERLAP_LINES).max(s + 1);
    }
}

/// Paragraphs packed into chunks up to the size limit; a paragraph too long on its own is windowed.
fn paragraphs(doc: Lines, start: usize, end: usize, title: Option<String>, out: &mut Vec<Chunk>) {
    let mut paras: Vec<(usize, usize)> = Vec::new();
    let mut i = start;
    while i < end {
        if doc.blank(i) {
            i += 1;
            continue;
        }
        let s = i;
        while i < end && !doc.blank(i) {
            i += 1;
        }
        paras.push((s, i));
    }
    let mut pack: Option<(usize, usize)> = None;
    for (s, e) in paras {
        pack = match pack {
            Some((ps, _)) if doc.chars(ps, e) <= MAX_CHUNK_CHARS => Some((ps, e)),
            Some((ps, pe)) => {
                emit(doc, ps, pe, &title, out);
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((ps, pe)) = pack {
        emit(doc, ps, pe, &title, out);
    }
}

static ATX_HEADING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
        .unwrap_or_else(|e| panic!("heading pattern is invalid: {e}"))
});

fn markdown(doc: Lines, out: &mut Vec<Chunk>) {
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut section_start = 0;
    let mut section_title: Option<String> = None;
    let mut fence: Option<(char, usize)> = None;
    let flush = |start: usize, end: usize, title: &Option<String>, out: &mut Vec<Chunk>| {
        let (s, e) = doc.trim(start, end);
        // A heading with nothing under it: its title lives on in its subsections.
        if s == e || (e - s == 1 && title.is_some() && ATX_HEADING.is_match(doc.lines[s])) {
            return;
        }
        paragraphs(doc, s, e, title.clone(), out);
    };
    for (i, line) in doc.lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some((marker, len)) = fence {
            let run = trimmed.chars().take_while(|&c| c == marker).count();
            if run >= len && trimmed[run..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if indent < 4 {
            let marker = trimmed.chars().next().unwrap_or(' ');
            if marker == '`' || marker == '~' {
                let run = trimmed.chars().take_while(|&c| c == marker).count();
                if run >= 3 {
                    fence = Some((marker, run));
                    continue;
                }
            }
        }
        if let Some(caps) = ATX_HEADING.captures(line) {
            flush(section_start, i, &section_title, out);
            let level = caps.get(1).map_or(1, |m| m.len());
            let text = caps.get(2).map_or("", |m| m.as_str()).trim().to_string();
            while path.last().is_some_and(|(l, _)| *l >= level) {
                path.pop();
            }
            path.push((level, text));
            let joined = path
                .iter()
                .map(|(_, t)| t.as_str())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" > ");
            section_title = title(&joined);
            section_start = i;
        }
    }
    flush(section_start, doc.lines.len(), &section_title, out);
}

static DEFINITION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)^[\ \t]*(?:
            (?:pub(?:\([^)]*\))?[\ \t]+)?(?:(?:async|unsafe|const|extern(?:[\ \t]+\x22[^\x22]*\x22)?|default)[\ \t]+)*
                (?:fn|struct|enum|trait|impl|mod|union|macro_rules!)\b
          | (?:async[\ \t]+)?def[\ \t]+\w
          | class[\ \t]+\w
          | (?:export[\ \t]+(?:default[\ \t]+)?)?(?:async[\ \t]+)?function\b
          | (?:export[\ \t]+)?(?:abstract[\ \t]+)?(?:class|interface|enum|type)[\ \t]+\w
          | (?:export[\ \t]+)?(?:const|let|var)[\ \t]+\w+[\ \t]*=[\ \t]*(?:async[\ \t]*)?(?:\(|function\b|\w+[\ \t]*=>)
          | func[\ \t]+
          | (?:(?:public|private|protected|internal|static|final|abstract|override|virtual|sealed)[\ \t]+)+
                [\w<>\[\],.\ ?]+[\ \t]+\w+[\ \t]*\(
          | module[\ \t]+\w
          | CREATE[\ \t]+(?:OR[\ \t]+REPLACE[\ \t]+)?(?:TABLE|VIEW|FUNCTION|INDEX|TRIGGER)\b
        )",
    )
    .unwrap_or_else(|e| panic!("definition pattern is invalid: {e}"))
});

/// Lines that belong to the definition below them: comments, doc comments, attributes, decorators.
fn is_preface(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//")
        || t.starts_with("#[")
        || t.starts_with("#!")
        || t.starts_with('@')
        || t.starts_with("/*")
        || t.starts_with("* ")
        || t == "*"
        || t.starts_with("*/")
        || t.starts_with("--")
        || (t.starts_with('#') && !t.starts_with("#include") && !t.starts_with("#define"))
}

fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| c.is_whitespace())
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

fn definition_title(line: &str) -> Option<String> {
    title(line.trim().trim_end_matches(['{', ':', ' ']))
}

/// How deeply definitions are split inside definitions; deeper, a long piece is cut into windows.
const MAX_NESTING: usize = 8;

/// Splits `[start, end)` at its shallowest definitions; `head` is the enclosing definition's title,
/// `defs[i]` the indentation of line `i` when it starts a definition, `depth` how many enclosing
/// definitions were split already.
fn code(
    doc: Lines,
    defs: &[Option<usize>],
    start: usize,
    end: usize,
    head: Option<String>,
    depth: usize,
    out: &mut Vec<Chunk>,
) {
    let Some(level) = (start..end).filter_map(|i| defs[i]).min() else {
        emit(doc, start, end, &head, out);
        return;
    };
    let at_level = |i: usize| defs[i] == Some(level);
    // Split points: each shallowest definition, moved up over its preface lines.
    let mut cuts: Vec<usize> = Vec::new();
    for d in (start..end).filter(|&i| at_level(i)) {
        let mut s = d;
        while s > start && !doc.blank(s - 1) && is_preface(doc.lines[s - 1]) {
            s -= 1;
        }
        if cuts.last().is_none_or(|&c| s > c) {
            cuts.push(s);
        }
    }
    let mut bounds = vec![start];
    bounds.extend(cuts.iter().copied().filter(|&c| c > start));
    bounds.push(end);
    for w in bounds.windows(2) {
        let (s, e) = (w[0], w[1]);
        let def_line = (s..e).find(|&i| at_level(i));
        let seg_title = match def_line {
            Some(d) => {
                let own = definition_title(doc.lines[d]);
                match (&head, own) {
                    (Some(h), Some(o)) => title(&format!("{h} > {o}")),
                    (None, o) => o,
                    (h, None) => h.clone(),
                }
            }
            None => head.clone(),
        };
        let (ts, te) = doc.trim(s, e);
        if ts == te {
            continue;
        }
        if doc.chars(ts, te) <= MAX_CHUNK_CHARS {
            emit(doc, ts, te, &seg_title, out);
            continue;
        }
        // Too long: split at the definitions nested in it, if any (and not nested too deeply).
        let inner_start = def_line.map_or(ts, |d| d + 1);
        let first_inner = (inner_start..te).find(|&i| defs[i].is_some());
        match (first_inner, def_line) {
            (Some(first_inner), Some(_)) if depth < MAX_NESTING => {
                let mut head_end = first_inner;
                while head_end > inner_start
                    && !doc.blank(head_end - 1)
                    && is_preface(doc.lines[head_end - 1])
                {
                    head_end -= 1;
                }
                emit(doc, ts, head_end, &seg_title, out);
                code(doc, defs, head_end, te, seg_title, depth + 1, out);
            }
            _ => windows(doc, ts, te, &seg_title, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(chunks: &[Chunk]) -> Vec<(Option<&str>, usize, usize)> {
        chunks
            .iter()
            .map(|c| (c.title.as_deref(), c.line_start, c.line_end))
            .collect()
    }

    #[test]
    fn a_long_blank_line_is_no_chunk() {
        // Found by tests/hostile_input.rs: a line of 1,600 spaces between two comments was cut into
        // two chunks of nothing but spaces.
        let text = format!("# Title\n{}\n# Title", " ".repeat(1600));
        let chunks = chunk_document(DocumentKind::Code, &text);
        assert_eq!(summary(&chunks), [(None, 1, 1), (None, 3, 3)]);
        let text = format!("x{}y", " ".repeat(3000));
        let chunks = chunk_document(DocumentKind::Text, &text);
        assert_eq!(summary(&chunks), [(None, 1, 1), (None, 1, 1)]);
        assert!(chunks.iter().all(|c| !c.text.trim().is_empty()));
    }

    #[test]
    fn definitions_nested_deeper_than_the_limit_are_windowed() {
        // Found by tests/hostile_input.rs: 1,500 definitions, each nested in the one before, took
        // 100 s to chunk (every level matched every line below it again). Now each line is matched
        // once and splitting stops MAX_NESTING levels down.
        let text: String = (0..40)
            .map(|i| format!("{0}fn f{i}() {{\n{0} {1}\n", " ".repeat(i), "x".repeat(60)))
            .collect();
        let chunks = chunk_document(DocumentKind::Code, &text);
        let depth = |c: &Chunk| {
            c.title
                .as_deref()
                .map_or(0, |t| t.matches(" > ").count() + 1)
        };
        assert_eq!(chunks.iter().map(depth).max(), Some(MAX_NESTING + 1));
        assert!(
            chunks
                .iter()
                .all(|c| c.text.chars().count() <= MAX_CHUNK_CHARS)
        );
        let covered: std::collections::BTreeSet<usize> = chunks
            .iter()
            .flat_map(|c| c.line_start..=c.line_end)
            .collect();
        assert_eq!(covered, (1..=80).collect());
    }

    #[test]
    fn markdown_by_heading_with_paths_and_fences() {
        let md = "Intro line.\n\n# Guide\n\n## Install\nRun it.\n```sh\n# not a heading\n```\n\n## Use\n### Linux\nApt.\n# Other #\nText.\n";
        let chunks = chunk_document(DocumentKind::Markdown, md);
        assert_eq!(
            summary(&chunks),
            [
                (None, 1, 1),
                (Some("Guide > Install"), 5, 9),
                (Some("Guide > Use > Linux"), 12, 13),
                (Some("Other"), 14, 15),
            ]
        );
        assert_eq!(
            chunks[1].text,
            "## Install\nRun it.\n```sh\n# not a heading\n```"
        );
    }

    #[test]
    fn code_by_definition_with_prefaces() {
        let rs = "use std::fmt;\n\n/// Adds.\n#[inline]\npub fn add(a: u8) -> u8 {\n    a\n}\n\nstruct S;\n\nimpl S {\n    fn new() -> Self { S }\n}\n";
        let chunks = chunk_document(DocumentKind::Code, rs);
        assert_eq!(
            summary(&chunks),
            [
                (None, 1, 1),
                (Some("pub fn add(a: u8) -> u8"), 3, 7),
                (Some("struct S;"), 9, 9),
                (Some("impl S"), 11, 13),
            ]
        );
        let py = "import os\n\n@cached\ndef f(x):\n    \"\"\"Doc.\"\"\"\n    return x\n\nclass C:\n    def m(self):\n        pass\n";
        let chunks = chunk_document(DocumentKind::Code, py);
        assert_eq!(
            summary(&chunks),
            [
                (None, 1, 1),
                (Some("def f(x)"), 3, 6),
                (Some("class C"), 8, 10)
            ]
        );
    }

    #[test]
    fn long_definitions_split_at_nested_ones_then_windows() {
        let mut src = String::from("impl Big {\n");
        for i in 0..40 {
            src.push_str(&format!(
                "    fn method_{i}(&self) -> u32 {{\n        {i} + 1 + 2 + 3 + 4 + 5\n    }}\n"
            ));
        }
        src.push_str("}\n");
        let chunks = chunk_document(DocumentKind::Code, &src);
        assert!(chunks.len() >= 40, "{}", chunks.len());
        assert_eq!(chunks[0].title.as_deref(), Some("impl Big"));
        assert_eq!(
            chunks[1].title.as_deref(),
            Some("impl Big > fn method_0(&self) -> u32")
        );
        assert_eq!((chunks[1].line_start, chunks[1].line_end), (2, 4));

        // No nested definitions: overlapping windows, none over the limit.
        let body: String = (0..300)
            .map(|i| format!("    let x{i} = {i} * 2;\n"))
            .collect();
        let src = format!("fn long() {{\n{body}}}\n");
        let chunks = chunk_document(DocumentKind::Code, &src);
        assert!(chunks.len() > 3);
        for w in chunks.windows(2) {
            assert_eq!(w[1].line_start, w[0].line_end + 1 - OVERLAP_LINES);
        }
        assert!(
            chunks
                .iter()
                .all(|c| c.text.chars().count() <= MAX_CHUNK_CHARS)
        );
        assert!(
            chunks
                .iter()
                .all(|c| c.title.as_deref() == Some("fn long()"))
        );
    }

    #[test]
    fn text_by_paragraphs_and_long_lines_are_cut() {
        let para = "word ".repeat(100);
        let text = format!("{para}\n\n{para}\n\n{para}\n\nshort\n");
        let chunks = chunk_document(DocumentKind::Text, &text);
        assert_eq!(
            summary(&chunks),
            [(None, 1, 3), (None, 5, 7)],
            "two paragraphs fit in one chunk, the third starts the next"
        );
        let line = "x".repeat(MAX_CHUNK_CHARS * 2 + 10);
        let chunks = chunk_document(DocumentKind::Text, &line);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| (c.line_start, c.line_end) == (1, 1)));
        assert!(chunk_document(DocumentKind::Text, "\n\n  \n").is_empty());
    }

    #[test]
    fn kinds_by_extension() {
        assert_eq!(kind_of(Path::new("a/README.md")), DocumentKind::Markdown);
        assert_eq!(kind_of(Path::new("src/lib.RS")), DocumentKind::Code);
        assert_eq!(kind_of(Path::new("notes.txt")), DocumentKind::Text);
        assert_eq!(kind_of(Path::new("Makefile")), DocumentKind::Text);
    }
}
