//! Turning [`Record`]s into prompts and tokenized [`Example`]s.
//!
//! A multiple-choice item becomes an instruction/completion pair (OLMES formats):
//!
//! - `cloze` (answer text, "RC"): `Question: {question}\nAnswer:` → ` {answer text}`; with a
//!   passage (BoolQ, SciQ) the passage comes first; completion-style items (HellaSwag) are
//!   `{context}` → ` {ending}`;
//! - `letter` ("MC"): the question, the options as ` A. …` lines, `Answer:` → ` {letter}`.
//!
//! With a chat template (instruct models, `data.chat`), the prompt is rendered as one user
//! message with the assistant turn opened (`add_generation_prompt`), and the completion is
//! the answer without its leading space, followed by the end-of-sequence token in training
//! examples. The loss is on the completion tokens only (`Example::loss_start`).

use std::fmt;

use cgfed_core::{Error, Example, Result, TextTokenizer};
use serde::{Deserialize, Serialize};

use crate::records::{letter, ChatMessage, McItem, Record};

/// How a multiple-choice item is asked (`data.prompt_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    /// Answer text after `Answer:`.
    #[default]
    Cloze,
    /// Lettered options; the answer is a letter.
    Letter,
}

impl PromptFormat {
    /// Every accepted name, as written in TOML.
    pub const ACCEPTED: &'static [&'static str] = &["cloze", "letter"];

    /// The name as written in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptFormat::Cloze => "cloze",
            PromptFormat::Letter => "letter",
        }
    }
}

impl fmt::Display for PromptFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether HellaSwag-style items (a context to continue) are phrased without "Question:".
fn is_continuation(item: &McItem) -> bool {
    item.fields.contains_key("activity")
}

/// The prompt text of `item` in `format` (no chat template).
pub fn mc_prompt(item: &McItem, format: PromptFormat) -> String {
    let mut s = String::new();
    if let Some(p) = &item.passage {
        s.push_str(p.trim());
        s.push('\n');
    }
    if is_continuation(item) && format == PromptFormat::Cloze {
        s.push_str(item.question.trim());
        return s;
    }
    s.push_str("Question: ");
    s.push_str(item.question.trim());
    if format == PromptFormat::Letter {
        for (i, c) in item.choices.iter().enumerate() {
            s.push_str(&format!("\n {}. {}", letter(i), c.trim()));
        }
    }
    s.push_str("\nAnswer:");
    s
}

/// The completion for option `choice` of `item` in `format`, with its leading space.
pub fn mc_completion(item: &McItem, choice: usize, format: PromptFormat) -> String {
    match format {
        PromptFormat::Cloze => format!(" {}", item.choices[choice].trim()),
        PromptFormat::Letter => format!(" {}", letter(choice)),
    }
}

/// Renders prompts (with the model's chat template when enabled) and tokenizes examples.
pub struct Prompter {
    format: PromptFormat,
    chat: Option<minijinja::Environment<'static>>,
}

impl fmt::Debug for Prompter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompter")
            .field("format", &self.format)
            .field("chat", &self.chat.is_some())
            .finish()
    }
}

impl Prompter {
    /// A prompter for `format`; `chat_template` (Jinja source) is used when given.
    ///
    /// # Errors
    /// A chat template that does not compile (key `data.chat`).
    pub fn new(format: PromptFormat, chat_template: Option<&str>) -> Result<Self> {
        let chat = match chat_template {
            None => None,
            Some(src) => {
                let mut env = minijinja::Environment::new();
                env.add_template_owned("chat", src.to_string()).map_err(|e| {
                    Error::config(
                        "data.chat",
                        format!("the model's chat template does not compile: {e}; set `data.chat = \"off\"`"),
                    )
                })?;
                Some(env)
            }
        };
        Ok(Self { format, chat })
    }

    /// The multiple-choice format.
    pub fn format(&self) -> PromptFormat {
        self.format
    }

    /// Whether prompts go through a chat template.
    pub fn uses_chat(&self) -> bool {
        self.chat.is_some()
    }

    /// `messages` through the chat template, the assistant turn opened when
    /// `add_generation_prompt`.
    ///
    /// # Errors
    /// A template that fails to render.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let Some(env) = &self.chat else {
            // No template: a plain transcript.
            let mut s = String::new();
            for m in messages {
                s.push_str(&format!("{}: {}\n", m.role, m.content));
            }
            if add_generation_prompt {
                s.push_str("assistant:");
            }
            return Ok(s);
        };
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::InvalidInput(format!("chat template: {e}")))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => "",
            eos_token => "",
        })
        .map_err(|e| Error::InvalidInput(format!("chat template does not render: {e}")))
    }

    /// The context text for `item` (chat-rendered when enabled).
    ///
    /// # Errors
    /// A template that fails to render.
    pub fn mc_context(&self, item: &McItem) -> Result<String> {
        let prompt = mc_prompt(item, self.format);
        if self.chat.is_none() {
            return Ok(prompt);
        }
        self.render_chat(
            &[ChatMessage {
                role: "user".into(),
                content: prompt,
            }],
            true,
        )
    }

    /// The continuation text for option `choice` (no leading space after a chat prompt).
    pub fn mc_continuation(&self, item: &McItem, choice: usize) -> String {
        let c = mc_completion(item, choice, self.format);
        if self.chat.is_some() {
            c.trim_start().to_string()
        } else {
            c
        }
    }

    /// `(context, completion)` texts of a record that has a target; `None` for plain text.
    ///
    /// # Errors
    /// A chat without a final assistant message; a template that fails to render.
    pub fn pair(&self, rec: &Record) -> Result<Option<(String, String)>> {
        match rec {
            Record::Text { .. } => Ok(None),
            Record::Mc(item) => Ok(Some((
                self.mc_context(item)?,
                self.mc_continuation(item, item.answer),
            ))),
            Record::Completion {
                prompt, completion, ..
            } => {
                if self.chat.is_some() {
                    let ctx = self.render_chat(
                        &[ChatMessage {
                            role: "user".into(),
                            content: prompt.clone(),
                        }],
                        true,
                    )?;
                    Ok(Some((ctx, completion.trim_start().to_string())))
                } else {
                    Ok(Some((prompt.clone(), completion.clone())))
                }
            }
            Record::Chat { id, messages } => {
                let Some((last, head)) = messages.split_last() else {
                    return Err(Error::InvalidInput(format!("chat {id} has no messages")));
                };
                if last.role != "assistant" {
                    return Err(Error::InvalidInput(format!(
                        "chat {id}: the last message must be the assistant's (the target), not `{}`",
                        last.role
                    )));
                }
                Ok(Some((self.render_chat(head, true)?, last.content.clone())))
            }
        }
    }

    /// A training or evaluation example for `rec`: `[BOS] context completion [EOS in chat
    /// mode]`, the loss on the completion only, at most `seq_len` tokens (the context is cut
    /// from the left to fit). Plain-text records give `None` (they are cut into windows
    /// instead); so does a completion that alone does not fit.
    ///
    /// # Errors
    /// Tokenizer or template errors.
    pub fn example(
        &self,
        rec: &Record,
        tok: &dyn TextTokenizer,
        seq_len: usize,
    ) -> Result<Option<Example>> {
        let Some((ctx, completion)) = self.pair(rec)? else {
            return Ok(None);
        };
        let mut ctx_ids = tok.encode(&ctx)?;
        let mut target = tok.encode(&completion)?;
        if self.chat.is_some() {
            target.extend(tok.eos_id());
        }
        let bos: Vec<u32> = tok.bos_id().into_iter().collect();
        if target.is_empty() || bos.len() + target.len() > seq_len {
            return Ok(None);
        }
        let room = seq_len - bos.len() - target.len();
        if ctx_ids.len() > room {
            ctx_ids.drain(..ctx_ids.len() - room);
        }
        // The first target token needs something before it to be predicted from.
        if bos.is_empty() && ctx_ids.is_empty() {
            return Ok(None);
        }
        let loss_start = bos.len() + ctx_ids.len();
        let mut tokens = bos;
        tokens.extend(ctx_ids);
        tokens.extend(target);
        Ok(Some(Example { tokens, loss_start }))
    }
}
