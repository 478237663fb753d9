//! [`Record`]: one item of a dataset before prompting and tokenization — plain text, a
//! prompt/completion pair, a chat, or a multiple-choice question ([`McItem`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A multiple-choice question with one correct answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McItem {
    /// Identifier, unique within its dataset split (the dataset's own id when it has one,
    /// else `<dataset>/<split>/<row>`).
    pub id: String,
    /// The question (or, for completion-style tasks like HellaSwag, the context to continue).
    pub question: String,
    /// The answer options, in the dataset's order.
    pub choices: Vec<String>,
    /// Index of the correct option in `choices`.
    pub answer: usize,
    /// A passage the question is about (BoolQ, SciQ's support), if any.
    pub passage: Option<String>,
    /// Extra fields for partitioning and per-category breakdowns (`subject`, `category`,
    /// `activity`, …).
    pub fields: BTreeMap<String, String>,
}

impl McItem {
    /// The answer letter, `A` for option 0.
    pub fn answer_letter(&self) -> String {
        letter(self.answer)
    }
}

/// The letter of option `i`: `A`, `B`, … (then `A1`, `B1`, … past `Z`).
pub fn letter(i: usize) -> String {
    let c = char::from(b'A' + (i % 26) as u8);
    if i < 26 {
        c.to_string()
    } else {
        format!("{c}{}", i / 26)
    }
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// One dataset item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Plain text for language modelling (loss on every token).
    Text {
        /// Identifier.
        id: String,
        /// The text.
        text: String,
    },
    /// A prompt and the completion to learn (loss on the completion only).
    Completion {
        /// Identifier.
        id: String,
        /// The prompt (context only).
        prompt: String,
        /// The completion (the target).
        completion: String,
    },
    /// A chat: the last assistant message is the target, everything before it context.
    Chat {
        /// Identifier.
        id: String,
        /// The messages in order.
        messages: Vec<ChatMessage>,
    },
    /// A multiple-choice question.
    Mc(McItem),
}

impl Record {
    /// The record's identifier.
    pub fn id(&self) -> &str {
        match self {
            Record::Text { id, .. } | Record::Completion { id, .. } | Record::Chat { id, .. } => id,
            Record::Mc(item) => &item.id,
        }
    }

    /// The value used to partition and break down by `field`: for a multiple-choice item
    /// `label` is the answer letter and any other name looks up [`McItem::fields`]; other
    /// records have only an empty label.
    pub fn field(&self, field: &str) -> String {
        match self {
            Record::Mc(item) if field == "label" => item.answer_letter(),
            Record::Mc(item) => item.fields.get(field).cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// The multiple-choice item, if this is one.
    pub fn as_mc(&self) -> Option<&McItem> {
        match self {
            Record::Mc(item) => Some(item),
            _ => None,
        }
    }
}
