//! Words for the full-text side: code identifiers split at `snake_case` and `camelCase` boundaries, on
//! both the indexed text and the query, so `getUserName`, `get_user_name` and "get user name" meet.
//!
//! The database tokenizers (FTS5 `unicode61`, PostgreSQL's parser) already split at `_` and lower-case
//! everything; what they cannot do is split `getUserName` or join `get_user_name` into one word. A
//! chunk's *lexemes* add exactly those words, and a query's terms include them too.

/// The words of an identifier: split at `_`, `-`, lower→upper (`getUser`), acronym ends (`HTTPServer` →
/// `HTTP`, `Server`) and letter/digit changes only where a lower-case letter follows digits
/// (`utf8Decode` → `utf8`, `Decode`). Lower-cased; empty parts dropped.
pub fn identifier_parts(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' || c == '-' {
            if !current.is_empty() {
                parts.push(std::mem::take(&mut current));
            }
            continue;
        }
        if !current.is_empty() && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_uppercase() && next_is_lower)
            {
                parts.push(std::mem::take(&mut current));
            }
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// Identifier-like words of a text: a letter or `_` followed by letters, digits and `_`.
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        })
}

/// The words a database tokenizer already produces for `word` (split at non-alphanumerics, lower case).
fn tokenizer_words(word: &str) -> Vec<String> {
    word.split('_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The extra words of an identifier: its parts and, when it has several, the parts joined — minus
/// what the tokenizer sees anyway.
fn extra_words(word: &str, out: &mut Vec<String>) {
    let parts = identifier_parts(word);
    if parts.len() < 2 {
        return;
    }
    let seen = tokenizer_words(word);
    let joined: String = parts.concat();
    for w in parts.into_iter().chain(std::iter::once(joined)) {
        if !seen.contains(&w) && !out.contains(&w) {
            out.push(w);
        }
    }
}

/// The lexemes of a chunk: for every compound identifier in `text`, the words the database tokenizer
/// would miss. Each distinct word once, in order of appearance (term frequency stays that of the
/// text), space-separated.
pub fn lexemes(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for word in identifiers(text) {
        extra_words(word, &mut out);
        if out.len() > 4096 {
            break;
        }
    }
    out.join(" ")
}

/// Very common English words that carry no meaning for search ("how to read a file in python").
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "of", "on", "or", "that", "the", "this", "to", "what", "when", "where",
    "which", "with", "you",
];

/// The terms of a free-text query for full-text search: its words lower-cased, compound identifiers
/// also split and joined, stopwords dropped (unless nothing else is left), each term once.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for word in query.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        for w in tokenizer_words(word) {
            if !all.contains(&w) {
                all.push(w);
            }
        }
        extra_words(word, &mut all);
    }
    let content: Vec<String> = all
        .iter()
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .cloned()
        .collect();
    if content.is_empty() { all } else { content }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_split_at_case_and_underscores() {
        assert_eq!(identifier_parts("getUserName"), ["get", "user", "name"]);
        assert_eq!(identifier_parts("get_user_name"), ["get", "user", "name"]);
        assert_eq!(identifier_parts("HTTPServer"), ["http", "server"]);
        assert_eq!(
            identifier_parts("parseHTTPRequest"),
            ["parse", "http", "request"]
        );
        assert_eq!(identifier_parts("utf8Decode"), ["utf8", "decode"]);
        assert_eq!(identifier_parts("__init__"), ["init"]);
        assert_eq!(identifier_parts("PortAllocation"), ["port", "allocation"]);
        assert_eq!(identifier_parts("x"), ["x"]);
    }

    #[test]
    fn lexemes_add_only_what_the_tokenizer_misses() {
        // camelCase: the tokenizer sees "writeboolean"; the parts are new.
        assert_eq!(lexemes("def writeBoolean(self, n):"), "write boolean");
        // snake_case: the tokenizer sees the parts; the joined word is new.
        assert_eq!(lexemes("fn is_iterable(obj)"), "isiterable");
        // Each word once, plain words add nothing.
        assert_eq!(lexemes("getUser getUser plain words"), "get user");
        assert_eq!(
            lexemes("parse_HTTPRequest"),
            "http request parsehttprequest"
        );
    }

    #[test]
    fn query_terms_meet_the_lexemes() {
        assert_eq!(
            query_terms("getUserName"),
            ["getusername", "get", "user", "name"]
        );
        assert_eq!(
            query_terms("how to check if a file is_readonly in python"),
            ["check", "if", "file", "readonly", "isreadonly", "python"]
        );
        // Only stopwords: keep them rather than search for nothing.
        assert_eq!(query_terms("how to"), ["how", "to"]);
        assert!(query_terms(" \"(*) ").is_empty());
    }
}
