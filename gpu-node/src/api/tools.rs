//! Tool calling: the request's `tools` and `tool_choice`, the schema that constrains
//! decoding when a call is required, and parsers that turn a model's output back into
//! OpenAI `tool_calls` for the formats of the families the engine runs:
//!
//! - Hermes / Qwen2.5 / Qwen3: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`;
//! - Llama 3.x: `<|python_tag|>{"name": …, "parameters": {…}}` or the bare JSON object
//!   (several separated by `;`);
//! - Mistral: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` (v3) or
//!   `[TOOL_CALLS]name[ARGS]{…}` (v11+).
//!
//! Special tokens are skipped when the engine decodes, so each parser also accepts its
//! format without the marker tokens.

use super::error::ApiError;
use serde_json::{Value, json};

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// JSON schema of its arguments (`{"type":"object"}` when absent).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// No call: tools stay out of the prompt and the output is text.
    None,
    /// The model decides; its output is parsed for calls.
    Auto,
    /// One call of any tool, decoding constrained to it.
    Required,
    /// One call of this tool, decoding constrained to its arguments.
    Named(String),
}

/// A tool-call output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `<tool_call>…</tool_call>` (also the format of the fallback prompt).
    Hermes,
    /// `<|python_tag|>` / bare JSON with `parameters`.
    Llama3,
    /// `[TOOL_CALLS]`.
    Mistral,
}

impl Family {
    /// The format a chat template's source asks for.
    pub fn of_template(source: &str) -> Family {
        if source.contains("[TOOL_CALLS]") {
            Family::Mistral
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            Family::Llama3
        } else {
            Family::Hermes
        }
    }
}

/// A call read from the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON text.
    pub arguments: String,
}

/// The tools, the choice, and what they mean for the prompt and the decoding.
#[derive(Debug, Clone)]
pub struct ToolSetup {
    /// Declared tools.
    pub tools: Vec<Tool>,
    /// The choice.
    pub choice: ToolChoice,
    /// `tools` as sent (for the template).
    pub raw: Value,
}

fn bad(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param), msg)
}

/// Reads `tools` and `tool_choice`; `None` when no tools are declared (then a
/// `tool_choice` other than `none`/`auto` is an error).
pub fn parse(tools: Option<&Value>, choice: Option<&Value>) -> Result<Option<ToolSetup>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad("tools", "'tools' must be a list of function tools.")),
    };
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let p = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("{p}.type"),
                "only tools of type \"function\" are supported.",
            ));
        }
        let f = t.get("function").ok_or_else(|| {
            bad(
                &format!("{p}.function"),
                "a function tool needs 'function'.",
            )
        })?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                &format!("{p}.function.name"),
                format!("function name {name:?} must be 1-64 letters, digits, '_' or '-'."),
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(bad(
                    &format!("{p}.function.parameters"),
                    "'parameters' must be a JSON schema object.",
                ));
            }
        };
        out.push(Tool {
            name: name.to_string(),
            parameters,
        });
    }
    let choice = match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(
                    "tool_choice",
                    format!(
                        "tool_choice {other:?} is not one of none, auto, required or a named function."
                    ),
                ));
            }
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}.",
                    )
                })?;
            if !out.iter().any(|t| t.name == name) {
                return Err(bad(
                    "tool_choice",
                    format!("tool_choice names {name:?}, which is not among 'tools'."),
                ));
            }
            ToolChoice::Named(name.to_string())
        }
    };
    if out.is_empty() {
        return match choice {
            ToolChoice::None | ToolChoice::Auto => Ok(None),
            _ => Err(bad(
                "tool_choice",
                "tool_choice requires a tool call but no 'tools' are given.",
            )),
        };
    }
    Ok(Some(ToolSetup {
        tools: out,
        choice,
        raw: Value::Array(list),
    }))
}

impl ToolSetup {
    /// The JSON schema decoding is constrained to, for `required` and named choices:
    /// named → the function's arguments; required → `{"name", "arguments"}` of any tool.
    pub fn forced_schema(&self) -> Option<Value> {
        match &self.choice {
            ToolChoice::Named(n) => self
                .tools
                .iter()
                .find(|t| &t.name == n)
                .map(|t| t.parameters.clone()),
            ToolChoice::Required => Some(json!({
                "anyOf": self.tools.iter().map(|t| json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })).collect::<Vec<_>>()
            })),
            _ => None,
        }
    }

    /// The calls in a constrained output (`required` / named).
    pub fn forced_call(&self, text: &str) -> Option<Call> {
        match &self.choice {
            ToolChoice::Named(n) => {
                // The text as generated (a stream sends it token by token).
                serde_json::from_str::<Value>(text.trim()).ok()?;
                Some(Call {
                    name: n.clone(),
                    arguments: text.trim().to_string(),
                })
            }
            ToolChoice::Required => {
                let v: Value = serde_json::from_str(text.trim()).ok()?;
                call_of(&v)
            }
            _ => None,
        }
    }

    /// A system prompt describing the tools in the Hermes format, for templates that
    /// have no `tools` variable (SmolLM2's, for one).
    pub fn fallback_prompt(&self) -> String {
        let mut s = String::from(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        if let Value::Array(a) = &self.raw {
            for t in a {
                s.push('\n');
                s.push_str(&t.to_string());
            }
        }
        s.push_str("\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
        s
    }
}

/// `{"name", "arguments"|"parameters"}` → a call (arguments as JSON text).
fn call_of(v: &Value) -> Option<Call> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v
        .get("arguments")
        .or_else(|| v.get("parameters"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let arguments = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(Call { name, arguments })
}

/// The JSON values at the start of `s`, one after another (separated by whitespace,
/// `,` or `;`), and the rest that is not JSON.
fn json_values(s: &str) -> (Vec<Value>, &str) {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    loop {
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                let used = it.byte_offset();
                out.push(v);
                rest = rest[used..]
                    .trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == ',');
                if rest.is_empty() {
                    return (out, rest);
                }
            }
            _ => return (out, rest),
        }
    }
}

/// Parses a free (`auto`) output in `family`'s format into text and calls. Only names
/// of declared tools count as calls; anything else stays text.
pub fn parse_output(family: Family, text: &str, tools: &[Tool]) -> (Option<String>, Vec<Call>) {
    let known = |c: &Call| tools.iter().any(|t| t.name == c.name);
    let none = || (Some(text.to_string()), Vec::new());
    let content = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    };
    match family {
        Family::Hermes => {
            if let Some(start) = text.find("<tool_call>") {
                let mut calls = Vec::new();
                for part in text[start..].split("<tool_call>").skip(1) {
                    let body = part.split("</tool_call>").next().unwrap_or_default();
                    let (vals, _) = json_values(body);
                    calls.extend(vals.iter().filter_map(call_of).filter(known));
                }
                if calls.is_empty() {
                    return none();
                }
                return (content(&text[..start]), calls);
            }
            bare_json(text, &known).unwrap_or_else(none)
        }
        Family::Llama3 => {
            let (head, body) = match text.find("<|python_tag|>") {
                Some(i) => (&text[..i], &text[i + "<|python_tag|>".len()..]),
                None => ("", text),
            };
            match bare_json(body, &known) {
                Some((_, calls)) => (content(head), calls),
                None => none(),
            }
        }
        Family::Mistral => {
            let (head, body) = match text.find("[TOOL_CALLS]") {
                Some(i) => (&text[..i], &text[i + "[TOOL_CALLS]".len()..]),
                None => ("", text),
            };
            // v11+: name[ARGS]{…} (or name{…} once [ARGS] is skipped as special).
            let trimmed = body.trim_start();
            let mut calls = Vec::new();
            let mut rest = trimmed;
            loop {
                let name_end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(rest.len());
                if name_end == 0 {
                    break;
                }
                let name = &rest[..name_end];
                let after = rest[name_end..].trim_start();
                let after = after.strip_prefix("[ARGS]").unwrap_or(after);
                let mut it = serde_json::Deserializer::from_str(after).into_iter::<Value>();
                match it.next() {
                    Some(Ok(v @ Value::Object(_))) => {
                        let used = it.byte_offset();
                        let c = Call {
                            name: name.to_string(),
                            arguments: v.to_string(),
                        };
                        if !known(&c) {
                            break;
                        }
                        calls.push(c);
                        rest = after[used..].trim_start();
                        rest = rest
                            .strip_prefix("[TOOL_CALLS]")
                            .unwrap_or(rest)
                            .trim_start();
                    }
                    _ => break,
                }
            }
            if !calls.is_empty() {
                return (content(head), calls);
            }
            match bare_json(body, &known) {
                Some((_, calls)) => (content(head), calls),
                None => none(),
            }
        }
    }
}

/// Calls written as bare JSON (an object, several objects, or a list of objects) that
/// make up the whole output.
fn bare_json(text: &str, known: &dyn Fn(&Call) -> bool) -> Option<(Option<String>, Vec<Call>)> {
    let t = text.trim();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    let (vals, rest) = json_values(t);
    if !rest.trim().is_empty() {
        return None;
    }
    let mut calls = Vec::new();
    for v in vals {
        match v {
            Value::Array(a) => {
                for x in a {
                    calls.push(call_of(&x)?);
                }
            }
            other => calls.push(call_of(&other)?),
        }
    }
    (!calls.is_empty() && calls.iter().all(known)).then_some((None, calls))
}

/// A tool-call id like OpenAI's (`call_` and 24 letters and digits).
pub fn call_id() -> String {
    use rand::Rng;
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut r = rand::rng();
    let s: String = (0..24)
        .map(|_| A[r.random_range(0..A.len())] as char)
        .collect();
    format!("call_{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<Tool> {
        ["get_weather", "add"]
            .iter()
            .map(|n| Tool {
                name: n.to_string(),
                parameters: json!({"type": "object"}),
            })
            .collect()
    }

    fn one(family: Family, out: &str) -> (Option<String>, Vec<Call>) {
        parse_output(family, out, &tools())
    }

    #[test]
    fn hermes_qwen_fixtures() {
        // Qwen2.5-7B-Instruct's output for a weather question (tags are plain text).
        let (c, calls) = one(
            Family::Hermes,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        );
        assert_eq!(c, None);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].arguments).unwrap(),
            json!({"city": "Paris"})
        );
        // Qwen3: thinking text first, two calls, the last one unclosed (max_tokens).
        let (c, calls) = one(
            Family::Hermes,
            "Let me check.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}",
        );
        assert_eq!(c.as_deref(), Some("Let me check."));
        assert_eq!(
            calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["add", "get_weather"]
        );
        // Unknown function: stays text.
        let (c, calls) = one(
            Family::Hermes,
            "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",
        );
        assert!(calls.is_empty());
        assert!(c.unwrap().contains("rm_rf"));
        // Plain prose.
        let (c, calls) = one(Family::Hermes, "The capital of France is Paris.");
        assert!(calls.is_empty());
        assert_eq!(c.as_deref(), Some("The capital of France is Paris."));
    }

    #[test]
    fn llama3_fixtures() {
        // Llama 3.1 with the python tag kept, and as decoded (special tag skipped).
        for out in [
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        ] {
            let (c, calls) = one(Family::Llama3, out);
            assert_eq!(c, None, "{out}");
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].name, "get_weather");
            assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        }
        // Llama 3.2: two calls separated by ';'.
        let (_, calls) = one(
            Family::Llama3,
            "{\"name\": \"add\", \"parameters\": {\"a\": 1}}; {\"name\": \"add\", \"parameters\": {\"a\": 2}}",
        );
        assert_eq!(calls.len(), 2);
        let (c, calls) = one(Family::Llama3, "I cannot call tools for that.");
        assert!(calls.is_empty() && c.is_some());
    }

    #[test]
    fn mistral_fixtures() {
        // v3 (Mistral-7B-Instruct-v0.3): a list after [TOOL_CALLS], kept and skipped.
        for out in [
            "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
            " [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
        ] {
            let (c, calls) = one(Family::Mistral, out);
            assert_eq!(c, None);
            assert_eq!(
                calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                ["get_weather", "add"]
            );
        }
        // v11+ (Mistral Small 3.1): name[ARGS]{…}, and with [ARGS] skipped.
        for out in [
            "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}",
            "get_weather{\"city\": \"Paris\"}",
        ] {
            let (_, calls) = one(Family::Mistral, out);
            assert_eq!(calls.len(), 1, "{out}");
            assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        }
        let (c, calls) = one(Family::Mistral, "Paris is sunny.");
        assert!(calls.is_empty() && c.is_some());
    }

    #[test]
    fn families_from_templates() {
        assert_eq!(Family::of_template("{{ '[TOOL_CALLS]' }}"), Family::Mistral);
        assert_eq!(Family::of_template("<|python_tag|>"), Family::Llama3);
        assert_eq!(Family::of_template("<tool_call>"), Family::Hermes);
    }

    #[test]
    fn choices_and_forced_schemas() {
        let t = json!([{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]);
        let s = parse(
            Some(&t),
            Some(&json!({"type": "function", "function": {"name": "add"}})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.choice, ToolChoice::Named("add".into()));
        assert_eq!(
            s.forced_schema().unwrap()["properties"]["a"]["type"],
            "integer"
        );
        assert_eq!(s.forced_call("{\"a\": 3}").unwrap().arguments, "{\"a\": 3}");
        let s = parse(Some(&t), Some(&json!("required"))).unwrap().unwrap();
        assert!(s.forced_schema().unwrap()["anyOf"].is_array());
        assert!(
            parse(
                Some(&t),
                Some(&json!({"type": "function", "function": {"name": "nope"}}))
            )
            .is_err()
        );
        assert!(parse(None, Some(&json!("required"))).is_err());
        assert!(parse(None, None).unwrap().is_none());
    }
}
