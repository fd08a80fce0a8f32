use super::*;
use serde_json::json;
use std::cell::RefCell;

/// A database that answers from fixed rows and records what it was asked.
#[derive(Default)]
struct RecordingDb {
    asked: RefCell<Vec<String>>,
}

impl SandboxDb for RecordingDb {
    fn get_value(
        &self,
        doctype: &str,
        filters: &Value,
        fields: &[String],
    ) -> Result<Value, String> {
        self.asked
            .borrow_mut()
            .push(format!("get_value {doctype} {filters} {fields:?}"));
        Ok(if doctype == "Global Defaults" {
            json!(["Brazil"])
        } else {
            Value::Null
        })
    }
    fn get_all(
        &self,
        doctype: &str,
        _: &Value,
        _: &[String],
        _: Option<&str>,
        _: Option<u64>,
    ) -> Result<Vec<Value>, String> {
        Ok(vec![json!({"name": format!("{doctype}-1")})])
    }
    fn count(&self, _: &str, _: &Value) -> Result<i64, String> {
        Ok(7)
    }
    fn sql(&self, query: &str, values: &Value) -> Result<Vec<Vec<Value>>, String> {
        self.asked
            .borrow_mut()
            .push(format!("sql {query} {values}"));
        Ok(vec![vec![json!(3)]])
    }
}

const NOW: &str = "2026-11-23 10:00:00.000000";

fn eval_doc(expr: &str, doc: &Value) -> Result<Value, SandboxError> {
    eval_expression(
        expr,
        &[Var {
            name: "doc",
            value: doc,
            by_attribute: true,
        }],
        &RecordingDb::default(),
        NOW,
        &Limits::default(),
    )
}

#[test]
fn conditions_read_the_document_by_attribute() {
    let doc = json!({"public": 1, "docstatus": 0, "items": [{"qty": 2}, {"qty": 3}]});
    assert_eq!(eval_doc("doc.public == 1", &doc).unwrap(), json!(true));
    assert_eq!(eval_doc("doc.docstatus == 1", &doc).unwrap(), json!(false));
    assert_eq!(
        eval_doc("[r.qty for r in doc.items if r.qty > 2]", &doc).unwrap(),
        json!([3])
    );
    assert!(eval_doc("doc.missing == 1", &doc).is_err());
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = check_expression("doc.public ==").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("syntax error"), "{msg}");
    assert!(msg.contains("line 1, column 14 of the condition"), "{msg}");
    let e = check_script("def f(a):\n    return a +\n", "f").unwrap_err();
    assert!(e.to_string().contains("line 2, column"), "{e}");
}

#[test]
fn scripts_must_define_their_function() {
    check_script(
        "def is_odd_note(consumer, doc, update_log):\n    return True\n",
        "is_odd_note",
    )
    .unwrap();
    let e = check_script("def other():\n    return 1\n", "is_odd_note").unwrap_err();
    assert!(e.to_string().contains("is_odd_note"), "{e}");
}

#[test]
fn the_user_guide_odd_note_script_runs_as_written() {
    let script = r#"
def is_odd_note(consumer, doc, update_log):
    rows = frappe.db.sql("SELECT COUNT(*) FROM `tabNote` WHERE creation <= %(creation)s",
                         {"creation": doc.creation})
    return rows[0][0] % 2 != 0
"#;
    let db = RecordingDb::default();
    let consumer = json!({"name": "http://b"});
    let doc = json!({"name": "n1", "creation": "2026-01-01 00:00:00"});
    let log = json!({"update_type": "Create", "seq": 4});
    let out = call_function(
        script,
        "is_odd_note",
        &[&consumer, &doc, &log],
        &db,
        NOW,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(out, json!(true));
    let asked = db.asked.borrow();
    assert!(
        asked[0].contains("%(creation)s") && asked[0].contains("2026-01-01 00:00:00"),
        "{asked:?}"
    );
}

#[test]
fn frappe_db_get_value_on_a_single_type() {
    let db = RecordingDb::default();
    let out = eval_expression(
        "frappe.db.get_value('Global Defaults', None, 'country')",
        &[],
        &db,
        NOW,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(out, json!("Brazil"));
    assert_eq!(
        db.asked.borrow()[0],
        r#"get_value Global Defaults null ["country"]"#
    );
}

#[test]
fn frappe_utils_follow_frappe() {
    let db = RecordingDb::default();
    let run = |e: &str| eval_expression(e, &[], &db, NOW, &Limits::default()).unwrap();
    assert_eq!(run("frappe.utils.nowdate()"), json!("2026-11-23"));
    assert_eq!(
        run("frappe.utils.add_days('2026-11-23', 10)"),
        json!("2026-12-03")
    );
    assert_eq!(
        run("frappe.utils.date_diff('2026-12-03', '2026-11-23')"),
        json!(10)
    );
    assert_eq!(run("frappe.utils.cint('12.7')"), json!(12));
    assert_eq!(run("frappe.utils.flt('1,234.567', 2)"), json!(1234.57));
    assert_eq!(run("frappe.utils.cstr(None)"), json!(""));
    assert_eq!(run("frappe.db.count('Note')"), json!(7));
    assert_eq!(run("frappe.db.get_all('Note')[0].name"), json!("Note-1"));
}

#[test]
fn endless_work_is_stopped() {
    let db = RecordingDb::default();
    let limits = Limits {
        ticks: 100_000,
        ..Limits::default()
    };
    let e = eval_expression(
        "def spin():\n    n = 0\n    for i in range(1000000000):\n        n += i\n    return n\nspin()",
        &[],
        &db,
        NOW,
        &limits,
    )
    .unwrap_err();
    assert!(matches!(e, SandboxError::Runtime(_)), "{e}");
    let limits = Limits {
        time: Duration::from_millis(50),
        ..Limits::default()
    };
    let started = Instant::now();
    let e = eval_expression(
        "def spin():\n    n = 0\n    for i in range(1000000000):\n        n += i\n    return n\nspin()",
        &[],
        &db,
        NOW,
        &limits,
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{e}");
}

#[test]
fn no_io_is_reachable() {
    let db = RecordingDb::default();
    for src in [
        "open('/etc/passwd')",
        "load('x.star', 'y')",
        "__import__('os')",
    ] {
        assert!(
            eval_expression(src, &[], &db, NOW, &Limits::default()).is_err(),
            "{src} ran"
        );
    }
}
