//! Field types: how each is stored and how incoming values are coerced.

use crate::error::{Error, Result};
use serde_json::Value;

/// A DocField's `fieldtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Data,
    SmallText,
    Text,
    LongText,
    TextEditor,
    Code,
    Json,
    Int,
    Float,
    Currency,
    Percent,
    Check,
    Date,
    Datetime,
    Time,
    Select,
    Link,
    DynamicLink,
    Table,
    TableMultiSelect,
    Password,
    ReadOnly,
    Attach,
    AttachImage,
    SectionBreak,
    ColumnBreak,
    TabBreak,
    Autocomplete,
    Barcode,
    Button,
    Color,
    Duration,
    Fold,
    Geolocation,
    Heading,
    Html,
    HtmlEditor,
    Icon,
    Image,
    MarkdownEditor,
    Phone,
    Rating,
    Signature,
}

/// How a field's value is kept in its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// A text column.
    Text,
    /// A 64-bit integer column.
    Int,
    /// A double precision column.
    Float,
    /// No column: child tables and layout fields.
    None,
}

impl FieldType {
    /// Every field type with its Frappe name (all of Frappe 14's).
    pub const ALL: [(FieldType, &'static str); 43] = [
        (FieldType::Data, "Data"),
        (FieldType::SmallText, "Small Text"),
        (FieldType::Text, "Text"),
        (FieldType::LongText, "Long Text"),
        (FieldType::TextEditor, "Text Editor"),
        (FieldType::Code, "Code"),
        (FieldType::Json, "JSON"),
        (FieldType::Int, "Int"),
        (FieldType::Float, "Float"),
        (FieldType::Currency, "Currency"),
        (FieldType::Percent, "Percent"),
        (FieldType::Check, "Check"),
        (FieldType::Date, "Date"),
        (FieldType::Datetime, "Datetime"),
        (FieldType::Time, "Time"),
        (FieldType::Select, "Select"),
        (FieldType::Link, "Link"),
        (FieldType::DynamicLink, "Dynamic Link"),
        (FieldType::Table, "Table"),
        (FieldType::TableMultiSelect, "Table MultiSelect"),
        (FieldType::Password, "Password"),
        (FieldType::ReadOnly, "Read Only"),
        (FieldType::Attach, "Attach"),
        (FieldType::AttachImage, "Attach Image"),
        (FieldType::SectionBreak, "Section Break"),
        (FieldType::ColumnBreak, "Column Break"),
        (FieldType::TabBreak, "Tab Break"),
        (FieldType::Autocomplete, "Autocomplete"),
        (FieldType::Barcode, "Barcode"),
        (FieldType::Button, "Button"),
        (FieldType::Color, "Color"),
        (FieldType::Duration, "Duration"),
        (FieldType::Fold, "Fold"),
        (FieldType::Geolocation, "Geolocation"),
        (FieldType::Heading, "Heading"),
        (FieldType::Html, "HTML"),
        (FieldType::HtmlEditor, "HTML Editor"),
        (FieldType::Icon, "Icon"),
        (FieldType::Image, "Image"),
        (FieldType::MarkdownEditor, "Markdown Editor"),
        (FieldType::Phone, "Phone"),
        (FieldType::Rating, "Rating"),
        (FieldType::Signature, "Signature"),
    ];

    /// Parses Frappe's name of a field type.
    pub fn parse(s: &str) -> Option<FieldType> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(t, _)| *t)
    }

    /// Frappe's name of this field type.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, n)| *n)
            .unwrap_or("Data")
    }

    /// How values of this type are stored.
    pub fn storage(self) -> Storage {
        match self {
            FieldType::Int | FieldType::Check => Storage::Int,
            // Frappe 14 keeps Duration (seconds) and Rating as decimals.
            FieldType::Float
            | FieldType::Currency
            | FieldType::Percent
            | FieldType::Duration
            | FieldType::Rating => Storage::Float,
            // Frappe's no-value fields: layout and display only.
            FieldType::Table
            | FieldType::TableMultiSelect
            | FieldType::SectionBreak
            | FieldType::ColumnBreak
            | FieldType::TabBreak
            | FieldType::Button
            | FieldType::Fold
            | FieldType::Heading
            | FieldType::Html
            | FieldType::Image => Storage::None,
            _ => Storage::Text,
        }
    }

    /// True for fields that hold a file's URL (`Attach`, `Attach Image`).
    pub fn is_attach(self) -> bool {
        matches!(self, FieldType::Attach | FieldType::AttachImage)
    }

    /// True for child-table fields.
    pub fn is_table(self) -> bool {
        matches!(self, FieldType::Table | FieldType::TableMultiSelect)
    }

    /// Coerces an incoming JSON value to this type; `Null` means empty.
    /// `label` names the field in the error message.
    pub fn coerce(self, value: &Value, label: &str, options: &str) -> Result<Value> {
        let bad = |what: &str| {
            Error::Validation(format!(
                "Value {} for field {label} is not a valid {what}",
                short(value)
            ))
        };
        if value.is_null() {
            return Ok(Value::Null);
        }
        match self.storage() {
            Storage::Int => {
                let n = match value {
                    Value::Number(n) => n
                        .as_i64()
                        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
                    Value::Bool(b) => Some(*b as i64),
                    Value::String(s) if s.trim().is_empty() => return Ok(Value::Null),
                    Value::String(s) => s.trim().parse::<i64>().ok().or_else(|| {
                        s.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.fract() == 0.0)
                            .map(|f| f as i64)
                    }),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad(if self == FieldType::Check {
                        "check (0 or 1)"
                    } else {
                        "integer"
                    })
                })?;
                if self == FieldType::Check && n != 0 && n != 1 {
                    return Err(bad("check (0 or 1)"));
                }
                Ok(Value::from(n))
            }
            Storage::Float => {
                let f = match value {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) if s.trim().is_empty() => return Ok(Value::Null),
                    Value::String(s) => s.trim().replace(',', "").parse::<f64>().ok(),
                    Value::Bool(b) => Some(*b as i64 as f64),
                    _ => None,
                }
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad("number"))?;
                Ok(serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(Value::Null))
            }
            Storage::None => Ok(value.clone()),
            Storage::Text => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Array(_) | Value::Object(_)
                        if matches!(self, FieldType::Json | FieldType::Geolocation) =>
                    {
                        value.to_string()
                    }
                    // `true` in a text field is a client's mistake, not the text "1".
                    _ => return Err(bad("text")),
                };
                if s.is_empty() {
                    return Ok(Value::Null);
                }
                match self {
                    FieldType::Date => crate::time::normalize_date(&s)
                        .map(Value::String)
                        .ok_or_else(|| bad("date (YYYY-MM-DD)")),
                    FieldType::Datetime => crate::time::normalize_datetime(&s)
                        .map(Value::String)
                        .ok_or_else(|| bad("datetime (YYYY-MM-DD HH:MM:SS)")),
                    FieldType::Time => crate::time::normalize_time(&s)
                        .map(Value::String)
                        .ok_or_else(|| bad("time (HH:MM:SS)")),
                    FieldType::Select => {
                        // As in Frappe, a Select without options takes any value (ERPNext
                        // fills some, such as Company's chart of accounts, in the browser).
                        if options.trim().is_empty() || options.split('\n').any(|o| o == s) {
                            Ok(Value::String(s))
                        } else {
                            let choices: Vec<&str> =
                                options.split('\n').filter(|o| !o.is_empty()).collect();
                            Err(Error::Validation(format!(
                                "{label} cannot be \"{s}\". It should be one of \"{}\"",
                                choices.join("\", \"")
                            )))
                        }
                    }
                    FieldType::Json => {
                        serde_json::from_str::<Value>(&s).map_err(|_| bad("JSON"))?;
                        Ok(Value::String(s))
                    }
                    _ => Ok(Value::String(s)),
                }
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coerces_by_type() {
        assert_eq!(
            FieldType::Int.coerce(&json!("12"), "Qty", "").unwrap(),
            json!(12)
        );
        assert!(FieldType::Int.coerce(&json!("twelve"), "Qty", "").is_err());
        assert_eq!(
            FieldType::Float.coerce(&json!("1.5"), "Rate", "").unwrap(),
            json!(1.5)
        );
        assert_eq!(
            FieldType::Check.coerce(&json!(true), "Public", "").unwrap(),
            json!(1)
        );
        assert!(FieldType::Check.coerce(&json!(2), "Public", "").is_err());
        assert!(FieldType::Date
            .coerce(&json!("2024-02-30"), "Date", "")
            .is_err());
        assert_eq!(
            FieldType::Date
                .coerce(&json!("2024-02-03"), "Date", "")
                .unwrap(),
            json!("2024-02-03")
        );
        assert!(FieldType::Select
            .coerce(&json!("Maybe"), "Status", "Open\nClosed")
            .is_err());
        // Frappe's rule: no options, any value (ERPNext's Company.chart_of_accounts).
        assert_eq!(
            FieldType::Select
                .coerce(&json!("Standard"), "Chart Of Accounts Template", "")
                .unwrap(),
            json!("Standard")
        );
        assert_eq!(
            FieldType::Data.coerce(&json!(""), "Title", "").unwrap(),
            Value::Null
        );
    }
}
