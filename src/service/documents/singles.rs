//! Singles: types with one document, kept as field/value rows in `tabSingles`.
//! Must not log a change: singles are not streamed.

use super::fields::merge_fields;
use super::{name_text, Pending, WriteFlags};
use crate::error::Result;
use crate::meta::{DocType, PermType};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Doc, Param};
use serde_json::Value;

impl Site {
    pub(super) async fn get_single(&self, dt: &DocType) -> Result<Doc> {
        let mut conn = self.store.conn().await?;
        let rows = store::fetch_docs(
            &mut conn,
            r#"SELECT field, value FROM "tabSingles" WHERE doctype = $1"#,
            &[store::Param::Text(Some(dt.name.clone()))],
        )
        .await?;
        let mut doc = Doc::new();
        doc.insert("doctype".into(), Value::String(dt.name.clone()));
        doc.insert("name".into(), Value::String(dt.name.clone()));
        for f in dt.data_fields() {
            let raw = rows
                .iter()
                .find(|r| r.get("field").and_then(Value::as_str) == Some(&f.fieldname))
                .and_then(|r| r.get("value"))
                .cloned()
                .unwrap_or(Value::Null);
            let v = if raw.is_null() {
                Value::Null
            } else {
                f.fieldtype
                    .coerce(&raw, f.label(), &f.options)
                    .unwrap_or(raw)
            };
            doc.insert(f.fieldname.clone(), v);
        }
        for k in ["modified", "modified_by"] {
            let v = rows
                .iter()
                .find(|r| r.get("field").and_then(Value::as_str) == Some(k))
                .and_then(|r| r.get("value"))
                .cloned()
                .unwrap_or(Value::Null);
            doc.insert(k.into(), v);
        }
        doc.insert("docstatus".into(), Value::from(0));
        Ok(doc)
    }

    pub(super) async fn update_single(
        &self,
        caller: &Caller,
        dt: &DocType,
        input: Doc,
    ) -> Result<Doc> {
        caller.require(dt, PermType::Write)?;
        let mut doc = Doc::new();
        let mut pending = Pending::default();
        merge_fields(
            &self.meta(),
            dt,
            &mut doc,
            &input,
            &WriteFlags::default(),
            &mut pending,
        )?;
        let mut tx = self.store.begin().await?;
        let now = self.clock.now();
        doc.insert("modified".into(), Value::String(now));
        doc.insert("modified_by".into(), Value::String(caller.user.clone()));
        for (k, v) in &doc {
            let text = match v {
                Value::Null => None,
                other => Some(name_text(other)),
            };
            store::execute(
                &mut tx,
                r#"INSERT INTO "tabSingles" (doctype, field, value) VALUES ($1, $2, $3)
                   ON CONFLICT (doctype, field) DO UPDATE SET value = excluded.value"#,
                &[Param::text(&dt.name), Param::text(k), Param::Text(text)],
            )
            .await?;
        }
        tx.commit().await?;
        self.get_single(dt).await
    }
}
