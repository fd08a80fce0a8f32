//! The site's database as scripts see it (`frappe.db`): read-only, as Administrator, and
//! synchronous, because Starlark calls it from inside an evaluation.
//!
//! Evaluations run inside [`run_script`], which moves the work off the async executor
//! (`block_in_place`) so that each database call can wait on the runtime.
//! Must not write: every statement runs in a read-only transaction.

use crate::meta::FieldType;
use crate::sandbox::SandboxDb;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{Filter, ListQuery};
use serde_json::Value;

/// `frappe.db` on one site.
pub struct SiteDb<'a> {
    site: &'a Site,
    caller: Caller,
}

impl<'a> SiteDb<'a> {
    /// Scripts read as Administrator: they are written by System Managers.
    pub fn new(site: &'a Site) -> SiteDb<'a> {
        SiteDb {
            site,
            caller: Caller::administrator(),
        }
    }

    fn wait<T>(
        &self,
        fut: impl std::future::Future<Output = crate::Result<T>>,
    ) -> Result<T, String> {
        tokio::runtime::Handle::current()
            .block_on(fut)
            .map_err(|e| e.to_string())
    }

    fn query(
        filters: &Value,
        fields: &[String],
        order_by: Option<&str>,
        limit: Option<u64>,
    ) -> Result<ListQuery, String> {
        Ok(ListQuery {
            fields: fields.to_vec(),
            filters: Filter::parse_many(filters).map_err(|e| e.to_string())?,
            order_by: order_by.unwrap_or_default().to_string(),
            page_length: limit.unwrap_or(0),
            ..Default::default()
        })
    }
}

/// Runs a synchronous script evaluation from async code without stalling the executor.
pub fn run_script<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl SandboxDb for SiteDb<'_> {
    fn get_value(
        &self,
        doctype: &str,
        filters: &Value,
        fields: &[String],
    ) -> Result<Value, String> {
        let dt = self.site.meta().get(doctype).map_err(|e| e.to_string())?;
        let row = if dt.issingle {
            let doc = self.wait(self.site.get_doc(&self.caller, doctype, doctype))?;
            Some(doc)
        } else {
            let q = Self::query(filters, fields, None, Some(1))?;
            self.wait(self.site.list_docs(&self.caller, doctype, &q))?
                .into_iter()
                .next()
        };
        Ok(match row {
            None => Value::Null,
            Some(r) => Value::Array(
                fields
                    .iter()
                    .map(|f| {
                        let v = r.get(f).cloned().unwrap_or(Value::Null);
                        // Singles store text; give numbers back as numbers.
                        match (dt.field(f).map(|d| d.fieldtype), &v) {
                            (Some(FieldType::Int | FieldType::Check), Value::String(s)) => {
                                s.parse::<i64>().map(Value::from).unwrap_or(v)
                            }
                            _ => v,
                        }
                    })
                    .collect(),
            ),
        })
    }

    fn get_all(
        &self,
        doctype: &str,
        filters: &Value,
        fields: &[String],
        order_by: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<Value>, String> {
        let q = Self::query(filters, fields, order_by, limit)?;
        Ok(self
            .wait(self.site.list_docs(&self.caller, doctype, &q))?
            .into_iter()
            .map(Value::Object)
            .collect())
    }

    fn count(&self, doctype: &str, filters: &Value) -> Result<i64, String> {
        let q = Self::query(filters, &[], None, None)?;
        self.wait(self.site.count_docs(&self.caller, doctype, &q))
    }

    fn sql(&self, query: &str, values: &Value) -> Result<Vec<Vec<Value>>, String> {
        let (sql, params) =
            crate::store::translate_frappe_sql(query, values).map_err(|e| e.to_string())?;
        self.wait(self.site.store.read_only_select(&sql, &params))
    }
}
