//! What the embedder sees for a chunk (its *embedding text*), as opposed to what is stored and shown.
//!
//! - **Markdown and text**: the title (a heading path or a record's title says what the section is
//!   about), a line break, the content.
//! - **Code**: the defined name in words (`parse_http_header` / `parseHTTPHeader` → `parse http
//!   header`), then the definition's docstring when it has one (Python's `"""…"""` after the signature,
//!   moved up front and joined into one line), then the code (without the docstring it already gave).
//!   Comments and doc comments written above a definition are at the front of the chunk already.
//!
//! Why: a sentence-transformers model is trained on natural language; a query ("python check if file
//! exists") matches words better than `def path_exists(p):`, and a model that reads 256 tokens should
//! read the description before the body. Measured on the CoSQA dev split (docs/benchmarks.md,
//! `## Knowledge search`). The indexer stores a hash of this text per chunk: a change here re-embeds
//! exactly the chunks whose text changed (and [`CHUNKER_VERSION`](super::chunk::CHUNKER_VERSION) makes
//! unchanged documents go through the chunker again).

use std::sync::LazyLock;

use regex::Regex;

use super::lexical;
use crate::store::DocumentKind;

/// The text the embedder sees for a chunk of `kind` with `title` and `content`.
pub fn embedding_text(kind: DocumentKind, title: Option<&str>, content: &str) -> String {
    match (kind, title) {
        (DocumentKind::Code, _) => code_text(title, content),
        (_, None) => content.to_string(),
        (_, Some(t)) => format!("{t}\n{content}"),
    }
}

fn code_text(title: Option<&str>, content: &str) -> String {
    let name = title
        .and_then(definition_name)
        .map(|n| lexical::identifier_parts(n).join(" "))
        .filter(|w| !w.is_empty());
    let doc = python_docstring(content);
    let (doc_text, body) = match &doc {
        Some(d) => (Some(d.text.as_str()), d.without.as_str()),
        None => (None, content),
    };
    let head = match (name, doc_text) {
        (Some(n), Some(d)) => format!("{n}. {d}"),
        (Some(n), None) => n,
        (None, Some(d)) => d.to_string(),
        (None, None) => return content.to_string(),
    };
    format!("{head}\n{body}")
}

/// A keyword that introduces a definition, then (Go) an optional receiver, then the defined name.
static KEYWORD_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)\b(?:fn|def|class|struct|enum|trait|union|mod|module|function|interface|type|func|macro_rules!
              |TABLE|VIEW|FUNCTION|INDEX|TRIGGER)
           [\ \t]+(?:\([^)]*\)[\ \t]*)?\*?([A-Za-z_$][A-Za-z0-9_$]*)",
    )
    .unwrap_or_else(|e| panic!("definition name pattern is invalid: {e}"))
});

/// `const name = (…) =>`, `let name = function`, and methods (`public int getSize(`): the identifier
/// before `=` or `(`.
static ASSIGNED_OR_CALLED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z_$][A-Za-z0-9_$]*)[\ \t]*(?:=|\()")
        .unwrap_or_else(|e| panic!("definition name pattern is invalid: {e}"))
});

/// The name a code chunk's title defines: the innermost definition of a `Outer > inner` title.
/// `impl Trait for Type` gives `Trait`; a title that defines nothing recognisable gives `None`.
pub fn definition_name(title: &str) -> Option<&str> {
    let last = title.rsplit(" > ").next().unwrap_or(title);
    if let Some(c) = KEYWORD_NAME.captures(last) {
        return c.get(1).map(|m| m.as_str());
    }
    if let Some(rest) = last.trim_start().strip_prefix("impl") {
        // `impl<T> Foo<T>`, `impl Display for Foo`: the first identifier after the generics.
        let rest = rest.trim_start();
        let rest = if rest.starts_with('<') {
            rest.find("> ").map_or(rest, |i| &rest[i + 2..])
        } else {
            rest
        };
        return rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .find(|w| !w.is_empty());
    }
    ASSIGNED_OR_CALLED
        .captures(last)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
}

struct Docstring {
    /// The docstring's words on one line.
    text: String,
    /// The content with the docstring's lines removed.
    without: String,
}

/// The docstring of the first Python `def`/`class` in `content`: the string literal that is the first
/// statement after its signature (which may span lines). `None` when there is none.
fn python_docstring(content: &str) -> Option<Docstring> {
    let lines: Vec<&str> = content.lines().collect();
    let def = lines.iter().position(|l| {
        let t = l.trim_start();
        t.starts_with("def ") || t.starts_with("async def ") || t.starts_with("class ")
    })?;
    // The signature ends at the first line (from the def) that ends with `:` outside a comment.
    let sig_end = (def..lines.len().min(def + 30)).find(|&i| {
        let code = lines[i].split(" #").next().unwrap_or(lines[i]).trim_end();
        code.ends_with(':')
    })?;
    let first = (sig_end + 1..lines.len()).find(|&i| !lines[i].trim().is_empty())?;
    let start = lines[first].trim_start();
    let start = start.trim_start_matches(['r', 'u', 'R', 'U']);
    let quote = ["\"\"\"", "'''", "\"", "'"]
        .into_iter()
        .find(|q| start.starts_with(q))?;
    let after = &start[quote.len()..];
    let (body, last) = if let Some(end) = after.find(quote) {
        (after[..end].to_string(), first)
    } else if quote.len() == 3 {
        let mut body = vec![after];
        let mut last = None;
        for (i, l) in lines.iter().enumerate().skip(first + 1) {
            if let Some(end) = l.find(quote) {
                body.push(&l[..end]);
                last = Some(i);
                break;
            }
            body.push(l);
        }
        (body.join(" "), last?)
    } else {
        return None;
    };
    let text = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    let without = lines[..first]
        .iter()
        .chain(&lines[last + 1..])
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    Some(Docstring { text, without })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_names_across_languages() {
        let cases = [
            ("def parse_http_header(line):", Some("parse_http_header")),
            ("async def fetch(url)", Some("fetch")),
            ("class HTTPServer(Base)", Some("HTTPServer")),
            ("Outer > def inner(self)", Some("inner")),
            (
                "pub fn read_config(path: &Path) -> Result<Config>",
                Some("read_config"),
            ),
            ("pub(crate) async fn run<T>(x: T)", Some("run")),
            ("impl<T: Clone> Cache<T>", Some("Cache")),
            ("impl Display for Error", Some("Display")),
            (
                "func (s *Server) ServeHTTP(w http.ResponseWriter)",
                Some("ServeHTTP"),
            ),
            (
                "export default async function loadUser(id)",
                Some("loadUser"),
            ),
            ("export const getUser = async (id) =>", Some("getUser")),
            ("public static int getSize(List<T> xs)", Some("getSize")),
            ("CREATE TABLE users (", Some("users")),
            ("---", None),
        ];
        for (title, want) in cases {
            assert_eq!(definition_name(title), want, "{title}");
        }
    }

    #[test]
    fn code_text_puts_name_and_docstring_first() {
        let code = "@cached\ndef file_exists(path):\n    \"\"\"Tell whether\n    a file exists.\"\"\"\n    return os.path.exists(path)";
        assert_eq!(
            embedding_text(DocumentKind::Code, Some("def file_exists(path)"), code),
            "file exists. Tell whether a file exists.\n@cached\ndef file_exists(path):\n    return os.path.exists(path)"
        );
        // A multi-line signature, a one-line docstring with a prefix.
        let code = "def f(a,\n      b):  # note\n\n    r'''Add.'''\n    return a + b";
        assert_eq!(
            embedding_text(DocumentKind::Code, Some("def f(a,"), code),
            "f. Add.\ndef f(a,\n      b):  # note\n\n    return a + b"
        );
        // No docstring: the name in words, then the code unchanged.
        let code = "fn readConfig() {\n    // \"\"\"not a docstring\"\"\"\n}";
        assert_eq!(
            embedding_text(DocumentKind::Code, Some("fn readConfig()"), code),
            format!("read config\n{code}")
        );
        // An unterminated docstring is left alone; no title: the code as it is.
        let code = "def g():\n    \"\"\"open\n    return 1";
        assert_eq!(
            embedding_text(DocumentKind::Code, Some("def g()"), code),
            format!("g\n{code}")
        );
        assert_eq!(embedding_text(DocumentKind::Code, None, "x = 1"), "x = 1");
    }

    #[test]
    fn prose_gets_its_title_first() {
        assert_eq!(
            embedding_text(DocumentKind::Markdown, Some("Guide > Install"), "Run it."),
            "Guide > Install\nRun it."
        );
        assert_eq!(embedding_text(DocumentKind::Text, None, "Plain."), "Plain.");
    }
}
