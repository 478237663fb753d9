//! Test helpers: a generated dataset in the Hugging Face Arrow layout.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Fields, Schema};

/// Writes an ARC-shaped split (`id`, `question`, `choices: [{text, label}]`, `answerKey`).
pub fn write_arc_fixture(root: &Path, rows: &[(&str, &str, &[&str], &str)]) -> Result<()> {
    let dir = root.join("hf_datasets/ai2_arc/ARC-Easy/validation");
    std::fs::create_dir_all(&dir)?;
    let choice_fields = Fields::from(vec![
        Field::new("text", DataType::Utf8, true),
        Field::new("label", DataType::Utf8, true),
    ]);
    let mut choices = ListBuilder::new(StructBuilder::new(
        choice_fields.clone(),
        vec![
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
        ],
    ));
    for (_, _, opts, _) in rows {
        for (i, o) in opts.iter().enumerate() {
            let s = choices.values();
            s.field_builder::<StringBuilder>(0).unwrap().append_value(o);
            s.field_builder::<StringBuilder>(1)
                .unwrap()
                .append_value(((b'A' + i as u8) as char).to_string());
            s.append(true);
        }
        choices.append(true);
    }
    let choices: ArrayRef = Arc::new(choices.finish());
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)));
    let qs: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1)));
    let keys: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3)));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("question", DataType::Utf8, true),
        Field::new("choices", choices.data_type().clone(), true),
        Field::new("answerKey", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![ids, qs, choices, keys])?;
    let file = std::fs::File::create(dir.join("data-00000-of-00001.arrow"))?;
    let mut w = StreamWriter::try_new(file, &schema)?;
    w.write(&batch)?;
    w.finish()?;
    Ok(())
}
