//! The chat template of `tokenizer_config.json`, rendered with minijinja the way
//! transformers renders it (trim_blocks, lstrip_blocks, Python string methods).

use super::files::{ModelError, read_json};
use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;
use std::path::Path;

/// One chat message handed to the template.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`.
    pub role: String,
    /// Text content (an assistant message with tool calls may have none).
    pub content: Option<String>,
    /// An assistant message's tool calls, OpenAI's shape with `arguments` parsed into
    /// an object where it is JSON (what HF templates expect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A tool message's function name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A compiled chat template with its special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template reads a `tools` variable (tool definitions go into its prompt).
    pub takes_tools: bool,
    /// The template's source, to tell tool-call formats apart.
    pub source: String,
    bos: String,
    eos: String,
}

/// Token strings of `tokenizer_config.json` (plain string or `{"content": …}`).
fn token_str(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// Parsed `tokenizer_config.json`: the template source and special tokens.
pub struct TokenizerConfig {
    /// The default chat template, if any.
    pub chat_template: Option<String>,
    /// BOS token text.
    pub bos_token: String,
    /// EOS token text.
    pub eos_token: String,
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json` (absent file: no template, no tokens). Where it has
    /// no `chat_template`, the `chat_template.jinja` beside it is the template (what
    /// transformers ≥ 4.43 writes with `save_pretrained`, and many model repos ship).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let mut tc = Self::load_json(path)?;
        if tc.chat_template.is_none() {
            let jinja = path.with_file_name("chat_template.jinja");
            if jinja.is_file() {
                let src = std::fs::read_to_string(&jinja).map_err(|e| ModelError::BadFile {
                    path: jinja.clone(),
                    message: format!("cannot read the chat template: {e}"),
                })?;
                tc.chat_template = Some(src);
            }
        }
        Ok(tc)
    }

    fn load_json(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Ok(TokenizerConfig {
                chat_template: None,
                bos_token: String::new(),
                eos_token: String::new(),
            });
        }
        let v: serde_json::Value = read_json(path)?;
        let chat_template = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
        Ok(TokenizerConfig {
            chat_template,
            bos_token: token_str(v.get("bos_token")),
            eos_token: token_str(v.get("eos_token")),
        })
    }
}

fn raise_exception(msg: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles a template; the error names the template problem.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("chat template does not compile: {e}"))?;
        Ok(ChatTemplate {
            env,
            takes_tools: source.contains("tools"),
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Renders the conversation with the generation prompt appended; `tools` (OpenAI's
    /// list of `{"type":"function","function":{…}}`) goes into the template's `tools`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, String> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| format!("chat template: {e}"))?;
        t.render(context! {
            messages => messages,
            add_generation_prompt => true,
            tools => tools,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| format!("chat template cannot render these messages: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_python_methods() {
        let src = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTemplate::new(src, "", "<|im_end|>").unwrap();
        let out = t
            .render(
                &[ChatMessage {
                    role: "user".into(),
                    content: Some(" hi ".into()),
                    ..Default::default()
                }],
                None,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system') }}", "", "").unwrap();
        let e = t.render(&[], None).unwrap_err();
        assert!(e.contains("no system"), "{e}");
    }

    #[test]
    fn the_template_file_beside_the_config_is_read_when_the_config_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("tokenizer_config.json");
        std::fs::write(&cfg, r#"{"eos_token": "<|im_end|>"}"#).unwrap();
        assert!(TokenizerConfig::load(&cfg).unwrap().chat_template.is_none());
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "{{ messages[0].content }}",
        )
        .unwrap();
        let tc = TokenizerConfig::load(&cfg).unwrap();
        assert_eq!(
            tc.chat_template.as_deref(),
            Some("{{ messages[0].content }}")
        );
        assert_eq!(tc.eos_token, "<|im_end|>");
        // A template inside the config wins over the file.
        std::fs::write(&cfg, r#"{"chat_template": "inline"}"#).unwrap();
        let tc = TokenizerConfig::load(&cfg).unwrap();
        assert_eq!(tc.chat_template.as_deref(), Some("inline"));
    }
}
