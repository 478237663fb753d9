//! Prompt formats and the chat template: the exact text of cloze and letter prompts, the
//! completion-only loss span, EOS after a chat completion, left truncation to `seq_len`,
//! and a template that does not compile.

use std::collections::BTreeMap;

use cgfed_data::prompts::{mc_completion, mc_prompt, PromptFormat, Prompter};
use cgfed_data::records::{McItem, Record};
use cgfed_data::ByteTokenizer;

/// SmolLM2-Instruct's template (ChatML with a default system prompt), as in its GGUF.
const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn item() -> McItem {
    McItem {
        id: "x".into(),
        question: "Which gas do plants absorb?".into(),
        choices: vec!["Oxygen".into(), "Carbon dioxide".into(), "Helium".into()],
        answer: 1,
        passage: None,
        fields: BTreeMap::new(),
    }
}

fn text(ids: &[u32]) -> String {
    ids.iter().map(|&t| t as u8 as char).collect()
}

#[test]
fn cloze_and_letter_prompts() {
    let it = item();
    assert_eq!(
        mc_prompt(&it, PromptFormat::Cloze),
        "Question: Which gas do plants absorb?\nAnswer:"
    );
    assert_eq!(
        mc_completion(&it, 1, PromptFormat::Cloze),
        " Carbon dioxide"
    );
    assert_eq!(
        mc_prompt(&it, PromptFormat::Letter),
        "Question: Which gas do plants absorb?\n A. Oxygen\n B. Carbon dioxide\n C. Helium\nAnswer:"
    );
    assert_eq!(mc_completion(&it, 2, PromptFormat::Letter), " C");
    // A passage comes first.
    let mut p = item();
    p.passage = Some("Plants take in CO2.".into());
    assert!(mc_prompt(&p, PromptFormat::Cloze).starts_with("Plants take in CO2.\nQuestion: "));
}

#[test]
fn examples_put_the_loss_on_the_completion_and_fit_seq_len() {
    let pr = Prompter::new(PromptFormat::Cloze, None).unwrap();
    let tok = ByteTokenizer;
    let rec = Record::Mc(item());
    let ex = pr.example(&rec, &tok, 128).unwrap().unwrap();
    assert_eq!(ex.tokens[0], 256);
    assert_eq!(text(&ex.tokens[ex.loss_start..]), " Carbon dioxide");
    assert_eq!(
        text(&ex.tokens[1..ex.loss_start]),
        "Question: Which gas do plants absorb?\nAnswer:"
    );
    // Too long: the prompt loses its oldest bytes, the completion is kept whole.
    let ex = pr.example(&rec, &tok, 30).unwrap().unwrap();
    assert_eq!(ex.tokens.len(), 30);
    assert_eq!(text(&ex.tokens[ex.loss_start..]), " Carbon dioxide");
    assert!(text(&ex.tokens[1..ex.loss_start]).ends_with("Answer:"));
    // A completion that cannot fit at all gives no example.
    assert!(pr.example(&rec, &tok, 10).unwrap().is_none());
    // Plain text is not a prompt/completion pair.
    let t = Record::Text {
        id: "t".into(),
        text: "hello".into(),
    };
    assert!(pr.example(&t, &tok, 64).unwrap().is_none());
}

#[test]
fn chat_template_wraps_the_prompt_and_ends_the_completion_with_eos() {
    let pr = Prompter::new(PromptFormat::Cloze, Some(CHATML)).unwrap();
    assert!(pr.uses_chat());
    let it = item();
    let ctx = pr.mc_context(&it).unwrap();
    assert_eq!(
        ctx,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nQuestion: Which gas do plants absorb?\nAnswer:<|im_end|>\n<|im_start|>assistant\n"
    );
    // No leading space after the opened assistant turn.
    assert_eq!(pr.mc_continuation(&it, 1), "Carbon dioxide");
    let ex = pr
        .example(&Record::Mc(it), &ByteTokenizer, 512)
        .unwrap()
        .unwrap();
    let target = &ex.tokens[ex.loss_start..];
    assert_eq!(*target.last().unwrap(), 257, "EOS closes the answer");
    assert_eq!(text(&target[..target.len() - 1]), "Carbon dioxide");

    // A chat record: the last assistant message is the target.
    let chat: Record = serde_json::from_str(
        r#"{"kind": "chat", "id": "c", "messages": [
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#,
    )
    .unwrap();
    let (ctx, completion) = pr.pair(&chat).unwrap().unwrap();
    assert!(ctx.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    assert_eq!(completion, "Hello!");
}

#[test]
fn a_broken_template_is_a_config_error() {
    let e = Prompter::new(PromptFormat::Cloze, Some("{% for x in %}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.chat"), "{e}");
}
