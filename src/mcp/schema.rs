//! JSON Schemas every client accepts. schemars describes integers with formats such as `uint16`,
//! `uint`, `int64` or `double`, which are not JSON Schema formats: clients that validate schemas with a
//! standard validator (Claude Code among them) warn about every one. [`make_portable`] rewrites each
//! tool's input and output schema once, when the tool router is built: formats outside the JSON Schema
//! specification's list are dropped (an unsigned one becomes `"minimum": 0`), and boolean subschemas
//! (`true` for free-form JSON values) become the equivalent empty object.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use serde_json::{Map, Value};

/// The formats defined by JSON Schema 2020-12 (format vocabulary).
pub const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Rewrites every tool's input and output schema in place.
pub fn make_portable<S>(router: &mut ToolRouter<S>) {
    for route in router.map.values_mut() {
        let input = Arc::make_mut(&mut route.attr.input_schema);
        portable_object(input);
        if let Some(output) = route.attr.output_schema.as_mut() {
            portable_object(Arc::make_mut(output));
        }
    }
}

/// How a keyword holds subschemas.
enum Holds {
    One,
    List,
    Map,
    Nothing,
}

fn holds(keyword: &str) -> Holds {
    match keyword {
        "items"
        | "additionalProperties"
        | "not"
        | "if"
        | "then"
        | "else"
        | "contains"
        | "propertyNames"
        | "unevaluatedItems"
        | "unevaluatedProperties"
        | "additionalItems" => Holds::One,
        "allOf" | "anyOf" | "oneOf" | "prefixItems" => Holds::List,
        "properties" | "$defs" | "definitions" | "patternProperties" | "dependentSchemas" => {
            Holds::Map
        }
        _ => Holds::Nothing,
    }
}

fn portable_object(schema: &mut Map<String, Value>) {
    if let Some(Value::String(format)) = schema.get("format")
        && !STANDARD_FORMATS.contains(&format.as_str())
    {
        let unsigned = format.starts_with("uint");
        schema.remove("format");
        if unsigned && !schema.contains_key("minimum") {
            schema.insert("minimum".into(), Value::from(0));
        }
    }
    for (key, value) in schema.iter_mut() {
        match (holds(key), value) {
            (Holds::One, v) => portable_subschema(v),
            (Holds::List, Value::Array(items)) => items.iter_mut().for_each(portable_subschema),
            (Holds::Map, Value::Object(map)) => map.values_mut().for_each(portable_subschema),
            _ => {}
        }
    }
}

fn portable_subschema(value: &mut Value) {
    match value {
        // `true` accepts anything, like `{}`; `false` accepts nothing, like `{"not": {}}`.
        Value::Bool(true) => *value = Value::Object(Map::new()),
        Value::Bool(false) => {
            let mut not = Map::new();
            not.insert("not".into(), Value::Object(Map::new()));
            *value = Value::Object(not);
        }
        Value::Object(map) => portable_object(map),
        _ => {}
    }
}

/// Problems a schema has that some clients reject: a non-standard format, a subschema that is not an
/// object, a top-level schema that is not `"type": "object"`. Empty when the schema is portable.
pub fn problems(schema: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    if schema.get("type") != Some(&Value::String("object".into())) {
        out.push("the schema is not of type object".into());
    }
    walk(schema, "", &mut out);
    out
}

fn walk(schema: &Map<String, Value>, at: &str, out: &mut Vec<String>) {
    if let Some(Value::String(f)) = schema.get("format")
        && !STANDARD_FORMATS.contains(&f.as_str())
    {
        out.push(format!("{at}: non-standard format `{f}`"));
    }
    let sub = |v: &Value, at: String, out: &mut Vec<String>| match v {
        Value::Object(m) => walk(m, &at, out),
        _ => out.push(format!("{at} is not an object schema")),
    };
    for (k, v) in schema {
        let at = format!("{at}/{k}");
        match (holds(k), v) {
            (Holds::One, v) => sub(v, at, out),
            (Holds::List, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    sub(item, format!("{at}/{i}"), out);
                }
            }
            (Holds::Map, Value::Object(map)) => {
                for (name, item) in map {
                    sub(item, format!("{at}/{name}"), out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{Endpoint, McpServer};

    #[test]
    fn integer_formats_become_bounds() {
        let mut s = serde_json::json!({
            "type": "object",
            "properties": {
                "port": {"type": "integer", "format": "uint16", "minimum": 0, "maximum": 65535},
                "n": {"type": "integer", "format": "uint"},
                "i": {"type": "integer", "format": "int64"},
                "when": {"type": "string", "format": "date-time"},
                "any": true,
                "format": {"type": "string"}
            },
            "required": ["format"]
        });
        portable_object(s.as_object_mut().unwrap());
        assert_eq!(
            s,
            serde_json::json!({
                "type": "object",
                "properties": {
                    "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                    "n": {"type": "integer", "minimum": 0},
                    "i": {"type": "integer"},
                    "when": {"type": "string", "format": "date-time"},
                    "any": {},
                    "format": {"type": "string"}
                },
                "required": ["format"]
            })
        );
        assert!(problems(s.as_object().unwrap()).is_empty());
    }

    /// Every tool of both endpoint kinds, input and output schema: objects all the way down, standard
    /// formats only.
    #[test]
    fn every_served_schema_is_portable() {
        for endpoint in [Endpoint::Meta, Endpoint::Project("p".into())] {
            let tools = McpServer::tools_for(&endpoint).list_all();
            assert!(tools.len() >= 10, "{} tools", tools.len());
            for tool in tools {
                let mut found = problems(&tool.input_schema);
                if let Some(out) = &tool.output_schema {
                    found.extend(problems(out).into_iter().map(|p| format!("output: {p}")));
                }
                assert!(
                    found.is_empty(),
                    "{} on {}: {found:#?}",
                    tool.name,
                    endpoint.label()
                );
            }
        }
    }
}
