"""Drives a docstream site with the real `frappe-client` PyPI package (which we did not write).

    python tests/python/client_test.py <site-url>        (or DOCSTREAM_URL=<site-url>)

Logs in as Administrator with the password `admin` (as every test site has it), prints one line
per check and exits non-zero on the first failure, naming the check and the answer that failed
it. The last line of a full run is `python client: N passed, 0 failed`.

Environment switches:
  DOCSTREAM_TEST_UPLOAD=0   leaves out the checks of /api/method/upload_file and the File DocType.

Run by tests/py_client.rs against a fresh site, inside the virtual environment made from
tests/python/requirements.txt. Safe to re-run by hand against the same site: every record it
makes carries a unique tag and is deleted again (Global Defaults' default_currency is put back).
"""

import json
import os
import random
import string
import sys
import traceback

import requests
from frappeclient import FrappeClient
from frappeclient.frappeclient import AuthError, FrappeException

PASSED = 0
STEP = 0


class CheckFailed(Exception):
    pass


def check(name, fn):
    """Runs one check; on failure prints why and exits 1."""
    global PASSED, STEP
    STEP += 1
    try:
        out = fn()
    except Exception:  # any failure ends the run with its story
        print(f"not ok {STEP} - {name}", flush=True)
        print(f"FAILED check {STEP}: {name}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        print(f"python client: {PASSED} passed, 1 failed", flush=True)
        sys.exit(1)
    PASSED += 1
    print(f"ok {STEP} - {name}", flush=True)
    return out


def eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(
            f"{what}:\n  expected {json.dumps(expected, default=str)}\n"
            f"  got      {json.dumps(actual, default=str)}"
        )


def ok(cond, what):
    if not cond:
        raise CheckFailed(what)


def raises(fn, *needles):
    """Calls fn, which must raise; the error text must contain every needle."""
    try:
        value = fn()
    except (FrappeException, AuthError) as err:
        text = str(err)
        for needle in needles:
            ok(needle in text, f"error does not mention {needle!r}: {text}")
        return err
    raise CheckFailed(f"expected an error mentioning {needles}, got the answer {value!r}")


def rows(value, what):
    ok(isinstance(value, list), f"{what}: expected a list, got {value!r}")
    return value


def main():
    url = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DOCSTREAM_URL", "")).rstrip("/")
    if not url:
        print("usage: client_test.py <site-url>   (or set DOCSTREAM_URL)", file=sys.stderr)
        sys.exit(2)

    tag = "py" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    alpha, beta = f"{tag} Alpha", f"{tag} Beta"
    uom = f"{tag} Box"
    code = {i: f"{tag}-I{i}" for i in range(1, 6)}
    # item -> (group, rate): Alpha 10/20/30, Beta 5/7
    spec = {1: (alpha, 10), 2: (alpha, 20), 3: (alpha, 30), 4: (beta, 5), 5: (beta, 7)}
    mine = [["item_code", "like", f"{tag}-%"]]

    # --- login ------------------------------------------------------------------------------
    check(
        "FrappeClient(url, 'Administrator', wrong password) raises AuthError",
        lambda: raises(lambda: FrappeClient(url, "Administrator", "not-the-password")),
    )

    client = FrappeClient(url)

    def login():
        res = client.login("Administrator", "admin")
        eq(res.get("message"), "Logged In", "login answer's message")
        eq(res.get("full_name"), "Administrator", "login answer's full_name")
        ok(client.session.cookies.get("sid") not in (None, "", "Guest"), "no sid cookie after login")

    check("login (POST / cmd=login) answers Logged In and sets a sid cookie", login)
    check(
        "get_api frappe.auth.get_logged_user is Administrator",
        lambda: eq(client.get_api("frappe.auth.get_logged_user"), "Administrator", "logged user"),
    )

    # --- seed: UOM, Item Groups, Items ---------------------------------------------------------
    def seed_masters():
        doc = client.insert({"doctype": "UOM", "uom_name": uom})
        eq((doc["doctype"], doc["name"], doc["uom_name"]), ("UOM", uom, uom), "inserted UOM")
        for group in (alpha, beta):
            doc = client.insert({"doctype": "Item Group", "item_group_name": group})
            eq(doc["name"], group, "Item Group named by item_group_name")
            eq(doc["owner"], "Administrator", "Item Group owner")
            eq(doc["docstatus"], 0, "Item Group docstatus")

    check("insert UOM and two Item Groups", seed_masters)

    def seed_items():
        for i, (group, rate) in spec.items():
            doc = client.insert({
                "doctype": "Item",
                "item_code": code[i],
                "item_name": f"Item {i} of {tag}",
                "item_group": group,
                "stock_uom": uom,
                "standard_rate": rate,
            })
            eq(doc["doctype"], "Item", "inserted doctype")
            eq(doc["name"], code[i], "Item named by item_code")
            eq(
                (doc["item_group"], doc["stock_uom"], doc["standard_rate"], doc["disabled"]),
                (group, uom, rate, 0),
                f"inserted Item {code[i]}",
            )
            eq(doc["owner"], "Administrator", "Item owner")
            ok(doc.get("creation") and doc.get("modified"), f"creation/modified missing: {doc}")

    check("insert five Items (Link to Item Group and UOM)", seed_items)

    check(
        "insert an Item whose Item Group does not exist raises LinkValidationError",
        lambda: raises(
            lambda: client.insert({"doctype": "Item", "item_code": f"{tag}-bad", "item_group": f"{tag} Nope"}),
            "LinkValidationError",
        ),
    )

    # --- get_list ------------------------------------------------------------------------------
    def list_dict_filter():
        got = client.get_list(
            "Item",
            fields=["name", "item_group", "standard_rate"],
            filters={"item_group": alpha},
            order_by="standard_rate desc",
        )
        eq(got, [
            {"name": code[3], "item_group": alpha, "standard_rate": 30},
            {"name": code[2], "item_group": alpha, "standard_rate": 20},
            {"name": code[1], "item_group": alpha, "standard_rate": 10},
        ], "get_list Item filters={item_group: Alpha} order_by standard_rate desc")

    check("get_list with a dict filter, fields and order_by", list_dict_filter)

    def list_list_filter():
        got = client.get_list(
            "Item",
            fields=["item_code", "standard_rate"],
            filters=mine + [["standard_rate", ">=", 7], ["item_group", "in", [alpha, beta]]],
            order_by="item_code asc",
        )
        eq(
            got,
            [{"item_code": code[i], "standard_rate": spec[i][1]} for i in (1, 2, 3, 5)],
            "get_list with like, >= and in filters",
        )
        got = client.get_list("Item", fields=["name"], filters={"item_group": ("!=", alpha), "item_code": ("like", f"{tag}%")})
        eq(sorted(r["name"] for r in got), [code[4], code[5]], "get_list with a (op, value) dict filter")

    check("get_list with list filters (like, >=, in) and (op, value) filters", list_list_filter)

    def list_default_fields():
        got = rows(client.get_list("Item", filters={"item_code": code[2]}), "get_list default fields")
        eq(len(got), 1, "rows for one item_code")
        row = got[0]
        eq(
            (row["name"], row["item_code"], row["item_group"], row["stock_uom"], row["standard_rate"]),
            (code[2], code[2], alpha, uom, 20),
            "the row of fields='*'",
        )
        for key in ("owner", "creation", "modified", "modified_by", "docstatus"):
            ok(key in row, f"fields='*' row lacks {key}: {row}")

    check("get_list with the client's default fields ('*')", list_default_fields)

    def paging():
        pages = []
        for start in (0, 2, 4, 6):
            page = client.get_list(
                "Item", fields=["name"], filters=mine, order_by="name asc",
                limit_start=start, limit_page_length=2,
            )
            pages.append([r["name"] for r in rows(page, "page")])
        eq(pages, [[code[1], code[2]], [code[3], code[4]], [code[5]], []], "pages of two, by name")
        page = client.get_list(
            "Item", fields=["name"], filters=mine, order_by="standard_rate asc",
            limit_start=1, limit_page_length=3,
        )
        eq([r["name"] for r in page], [code[5], code[1], code[2]], "page 1..3 by standard_rate")

    check("get_list paging with limit_start / limit_page_length", paging)

    # --- group_by and aggregates -------------------------------------------------------------
    agg_fields = [
        "item_group",
        "count(name) as n",
        "sum(standard_rate) as total",
        "avg(standard_rate) as mean",
        "min(standard_rate) as lo",
        "max(standard_rate) as hi",
    ]
    expected_groups = [
        {"item_group": alpha, "n": 3, "total": 60, "mean": 20, "lo": 10, "hi": 30},
        {"item_group": beta, "n": 2, "total": 12, "mean": 6, "lo": 5, "hi": 7},
    ]

    def group_get_api():
        got = client.get_api("frappe.client.get_list", {
            "doctype": "Item",
            "fields": json.dumps(agg_fields),
            "filters": json.dumps(mine),
            "group_by": "item_group",
            "order_by": "item_group asc",
        })
        eq(got, expected_groups, "frappe.client.get_list grouped by item_group")

    check("get_api frappe.client.get_list with group_by and count/sum/avg/min/max", group_get_api)

    def group_post_api():
        got = client.post_api("frappe.client.get_list", {
            "doctype": "Item",
            "fields": json.dumps(["item_group", "count(name) as n"]),
            "filters": json.dumps(mine),
            "group_by": "item_group",
            "order_by": "n desc",
        })
        eq(got, [{"item_group": alpha, "n": 3}, {"item_group": beta, "n": 2}], "grouped, ordered by the alias")

    check("post_api frappe.client.get_list with group_by, ordered by an aggregate's alias", group_post_api)

    def group_resource():
        res = client.session.get(url + "/api/resource/Item", params={
            "fields": json.dumps(["item_group", "max(standard_rate) as hi"]),
            "filters": json.dumps(mine),
            "group_by": "item_group",
            "order_by": "hi asc",
        })
        eq(res.status_code, 200, f"status of GET /api/resource/Item grouped ({res.text})")
        eq(res.json(), {"data": [{"item_group": beta, "hi": 7}, {"item_group": alpha, "hi": 30}]}, "grouped /api/resource answer")

    check("GET /api/resource/Item with group_by through the client's session", group_resource)

    def aggregate_no_group():
        got = client.get_list("Item", fields=["count(name) as n", "sum(standard_rate) as total"], filters=mine)
        eq(got, [{"n": 5, "total": 72}], "aggregates over all of the tag's items")

    check("get_list (the client's own) with aggregate fields and no group_by", aggregate_no_group)

    # --- get_count -----------------------------------------------------------------------------
    def counts():
        eq(client.get_api("frappe.client.get_count", {"doctype": "Item", "filters": json.dumps(mine)}), 5, "count of the tag's items")
        eq(
            client.get_request({"cmd": "frappe.client.get_count", "doctype": "Item", "filters": {"item_group": beta}}),
            2,
            "count of Beta items via GET /?cmd=",
        )
        eq(
            client.post_api("frappe.desk.reportview.get_count", {"doctype": "Item", "filters": json.dumps({"item_group": alpha})}),
            3,
            "frappe.desk.reportview.get_count of Alpha items",
        )
        total = client.get_api("frappe.client.get_count", {"doctype": "Item"})
        ok(isinstance(total, int) and total >= 5, f"unfiltered count: {total!r}")

    check("get_count (frappe.client.get_count, reportview.get_count) with filters", counts)

    # --- get_value / get_doc -------------------------------------------------------------------
    def values():
        eq(client.get_value("Item", "item_name", {"item_code": code[2]}), {"item_name": f"Item 2 of {tag}"}, "get_value by dict filter")
        eq(
            client.get_value("Item", ["item_group", "standard_rate"], code[3]),
            {"item_group": alpha, "standard_rate": 30},
            "get_value of two fields by name",
        )
        eq(client.get_value("Item", "name", {"item_group": beta, "standard_rate": 7}), {"name": code[5]}, "get_value of name")
        eq(client.get_value("Item", "item_name", {"item_code": f"{tag}-none"}), {}, "get_value with no match")

    check("get_value by filters and by name; no match gives {}", values)

    def get_doc():
        doc = client.get_doc("Item", code[4])
        eq(
            (doc["doctype"], doc["name"], doc["item_group"], doc["stock_uom"], doc["standard_rate"]),
            ("Item", code[4], beta, uom, 5),
            "get_doc Item",
        )

    check("get_doc Item", get_doc)

    # --- single doctype ------------------------------------------------------------------------
    single = {}

    def single_before():
        value = client.get_api("frappe.client.get_single_value", {"doctype": "Global Defaults", "field": "default_currency"})
        ok(value is None or isinstance(value, str), f"default_currency before the run: {value!r}")
        single["before"] = value

    check("get_single_value on Global Defaults before setting it", single_before)
    before = single["before"]
    currency = "CHF" if before != "CHF" else "NOK"

    def single_value():
        doc = client.set_value("Global Defaults", "Global Defaults", "default_currency", currency)
        eq((doc["doctype"], doc["default_currency"]), ("Global Defaults", currency), "set_value answer")
        eq(
            client.get_api("frappe.client.get_single_value", {"doctype": "Global Defaults", "field": "default_currency"}),
            currency,
            "get_single_value via GET /api/method",
        )
        eq(
            client.get_request({"cmd": "frappe.client.get_single_value", "doctype": "Global Defaults", "field": "default_currency"}),
            currency,
            "get_single_value via GET /?cmd=",
        )
        eq(client.get_doc("Global Defaults", "Global Defaults")["default_currency"], currency, "get_doc of the single")

    check("set_value then get_single_value on Global Defaults.default_currency", single_value)

    # --- update --------------------------------------------------------------------------------
    def update():
        doc = client.update({"doctype": "Item", "name": code[1], "item_name": f"Renamed item of {tag}", "standard_rate": 11})
        eq((doc["name"], doc["item_name"], doc["standard_rate"]), (code[1], f"Renamed item of {tag}", 11), "update answer")
        eq((doc["item_group"], doc["stock_uom"]), (alpha, uom), "an update must keep the fields it was not given")
        again = client.get_doc("Item", code[1])
        eq((again["item_name"], again["standard_rate"]), (f"Renamed item of {tag}", 11), "get_doc after update")
        ok(again["modified"] >= doc["creation"], f"modified {again['modified']} before creation {doc['creation']}")
        eq(
            client.get_api("frappe.client.get_count", {"doctype": "Item", "filters": json.dumps(mine + [["standard_rate", "=", 11]])}),
            1,
            "count with the new rate",
        )

    check("update Item (PUT /api/resource) and read it back", update)

    # --- a Sales Invoice with child rows: child-table columns, grouping, rename of a Link -----
    customer = f"{tag} Customer"
    invoice = {}

    def invoice_insert():
        client.insert({"doctype": "Customer", "customer_name": customer})
        doc = client.insert({
            "doctype": "Sales Invoice",
            "customer": customer,
            "items": [
                {"item_code": code[4], "qty": 2, "rate": 5},
                {"item_code": code[2], "qty": 4, "rate": 20},
                {"item_code": code[4], "qty": 1, "rate": 5},
            ],
        })
        eq((doc["doctype"], doc["customer"], doc["docstatus"]), ("Sales Invoice", customer, 0), "inserted invoice")
        eq([(r["item_code"], r["qty"], r["idx"]) for r in doc["items"]], [(code[4], 2, 1), (code[2], 4, 2), (code[4], 1, 3)], "invoice rows")
        invoice["name"] = doc["name"]

    check("insert a Customer and a Sales Invoice with three item rows", invoice_insert)

    def child_columns():
        got = client.get_list(
            "Sales Invoice",
            fields=["name", "`tabSales Invoice Item`.item_code", "`tabSales Invoice Item`.qty"],
            filters={"customer": customer},
            order_by="`tabSales Invoice Item`.idx asc",
        )
        eq(
            got,
            [{"name": invoice["name"], "item_code": c, "qty": q} for c, q in ((code[4], 2), (code[2], 4), (code[4], 1))],
            "child-table columns, one row per item row",
        )
        got = client.get_api("frappe.client.get_list", {
            "doctype": "Sales Invoice",
            "fields": json.dumps([
                "`tabSales Invoice Item`.item_code as item_code",
                "sum(`tabSales Invoice Item`.qty) as qty",
                "count(name) as n",
            ]),
            "filters": json.dumps({"customer": customer}),
            "group_by": "`tabSales Invoice Item`.item_code",
            "order_by": "qty desc",
        })
        eq(got, [{"item_code": code[2], "qty": 4, "n": 1}, {"item_code": code[4], "qty": 3, "n": 2}], "rows grouped by the child's item_code")
        got = client.get_list("Sales Invoice", fields=["name"], filters=[["Sales Invoice Item", "item_code", "=", code[2]]])
        eq(got, [{"name": invoice["name"]}], "filter on a child-table field")

    check("get_list Sales Invoice with child-table columns, grouped by a child column, filtered on one", child_columns)

    # --- rename --------------------------------------------------------------------------------
    renamed = f"{tag}-I4-renamed"

    def rename():
        eq(client.rename_doc("Item", code[4], renamed), renamed, "rename_doc answer")
        doc = client.get_doc("Item", renamed)
        eq((doc["name"], doc["item_code"], doc["item_group"]), (renamed, renamed, beta), "renamed Item (its autoname field follows)")
        eq(client.get_doc("Item", code[4]), None, "get_doc of the old name (a 404 without exc, as Frappe answers)")
        inv = client.get_doc("Sales Invoice", invoice["name"])
        eq([r["item_code"] for r in inv["items"]], [renamed, code[2], renamed], "the invoice's Link rows follow the rename")
        eq(client.get_value("Item", "name", {"item_group": beta, "standard_rate": 5}), {"name": renamed}, "get_value finds the new name")

    check("rename_doc Item (POST / cmd=frappe.client.rename_doc) and its links", rename)
    code[4] = renamed

    check(
        "rename_doc onto an existing name raises DuplicateEntryError",
        lambda: raises(lambda: client.rename_doc("Item", code[5], code[3]), "DuplicateEntryError"),
    )

    # --- delete --------------------------------------------------------------------------------
    def delete():
        eq(client.delete("Item", code[5]), None, "delete answer's message")
        eq(client.get_doc("Item", code[5]), None, "get_doc after delete (a 404 without exc: None, as against Frappe)")
        eq(client.get_api("frappe.client.get_count", {"doctype": "Item", "filters": json.dumps(mine)}), 4, "count after delete")

    check("delete Item (POST / cmd=frappe.client.delete); get_doc then returns None, as against Frappe", delete)

    check(
        "delete an Item still linked from the invoice raises LinkExistsError",
        lambda: raises(lambda: client.delete("Item", code[4]), "LinkExistsError", invoice.get("name", "?")),
    )

    # --- API key / secret ----------------------------------------------------------------------
    api_user = f"{tag}@example.com"
    keys = {}

    def make_keys():
        doc = client.insert({
            "doctype": "User", "email": api_user, "first_name": "Py", "last_name": tag,
            "roles": [{"role": "System Manager"}],
        })
        eq((doc["name"], doc["enabled"], [r["role"] for r in doc["roles"]]), (api_user, 1, ["System Manager"]), "inserted User")
        res = client.post_api("frappe.core.doctype.user.user.generate_keys", {"user": api_user})
        secret = res.get("api_secret") if isinstance(res, dict) else None
        ok(isinstance(secret, str) and secret, f"generate_keys answer: {res!r}")
        key = client.get_value("User", "api_key", api_user).get("api_key")
        ok(isinstance(key, str) and key, "User.api_key is empty after generate_keys")
        keys.update(key=key, secret=secret)

    check("generate_keys for a new System Manager user; read its api_key", make_keys)

    def token_client():
        tc = FrappeClient(url, api_key=keys["key"], api_secret=keys["secret"])
        eq(tc.get_api("frappe.auth.get_logged_user"), api_user, "user of the key/secret client")
        eq([r["name"] for r in tc.get_list("Item", fields=["name"], filters={"item_group": alpha}, order_by="name asc")],
           [code[1], code[2], code[3]], "get_list with key/secret")
        todo = tc.insert({"doctype": "ToDo", "description": f"{tag} todo", "priority": "High"})
        eq((todo["owner"], todo["status"], todo["priority"]), (api_user, "Open", "High"), "ToDo inserted with key/secret")
        got = tc.get_list("ToDo", fields=["name", "owner", "priority"], filters=[["description", "like", f"%{tag}%"], ["status", "=", "Open"]])
        eq(got, [{"name": todo["name"], "owner": api_user, "priority": "High"}], "ToDo list with key/secret")
        eq(tc.delete("ToDo", todo["name"]), None, "delete ToDo with key/secret")
        eq(tc.get_api("frappe.client.get_count", {"doctype": "ToDo", "filters": json.dumps([["description", "like", f"%{tag}%"]])}), 0, "ToDo count after delete")
        return tc

    tc = check("FrappeClient(url, api_key=, api_secret=) (Basic auth): whoami, get_list, insert/delete ToDo", token_client)

    check(
        "a wrong api_secret raises AuthenticationError",
        lambda: raises(
            lambda: FrappeClient(url, api_key=keys["key"], api_secret="wrong").get_api("frappe.auth.get_logged_user"),
            "AuthenticationError",
        ),
    )

    # --- upload (behind DOCSTREAM_TEST_UPLOAD=1) ------------------------------------------------
    if os.environ.get("DOCSTREAM_TEST_UPLOAD", "1") == "1":
        check_upload(client, url, tag, code[1])
    else:
        print("# upload_file checks skipped (set DOCSTREAM_TEST_UPLOAD=1 to run them)", flush=True)

    # --- cleanup -------------------------------------------------------------------------------
    def cleanup():
        client.delete("Sales Invoice", invoice["name"])
        client.delete("Customer", customer)
        for name in (code[1], code[2], code[3], code[4]):
            eq(client.delete("Item", name), None, f"delete {name}")
        eq(client.get_api("frappe.client.get_count", {"doctype": "Item", "filters": json.dumps(mine)}), 0, "items left")
        for name in (alpha, beta):
            client.delete("Item Group", name)
        client.delete("UOM", uom)
        client.delete("User", api_user)
        eq(client.get_value("User", "name", {"name": api_user}), {}, "User left after delete")
        if before is not None:
            client.set_value("Global Defaults", "Global Defaults", "default_currency", before)

    check("delete what the run made (invoice, customer, items, groups, UOM, user)", cleanup)

    check(
        "the deleted user's api key no longer works",
        lambda: raises(lambda: tc.get_api("frappe.auth.get_logged_user"), "AuthenticationError"),
    )

    # --- logout --------------------------------------------------------------------------------
    def logout():
        sid = client.session.cookies.get("sid")
        ok(sid and sid != "Guest", f"no session to end (sid={sid!r})")
        client.logout()
        raises(lambda: client.get_api("frappe.auth.get_logged_user"), "PermissionError")
        # The server, not only the cookie jar, must have ended it: the old sid is refused.
        res = requests.get(url + "/api/method/frappe.auth.get_logged_user", cookies={"sid": sid}, headers={"Accept": "application/json"})
        eq(res.status_code, 403, f"status with the old sid ({res.text})")
        eq(res.json().get("exc_type"), "PermissionError", "exc_type with the old sid")

    check("logout (GET /?cmd=logout) ends the session: get_logged_user then fails", logout)

    def context_manager():
        with FrappeClient(url, "Administrator", "admin") as c2:
            eq(c2.get_api("frappe.auth.get_logged_user"), "Administrator", "user inside with-block")
            sid = c2.session.cookies.get("sid")
        res = requests.get(url + "/api/method/frappe.auth.get_logged_user", cookies={"sid": sid})
        eq(res.status_code, 403, "the with-block's session after it ends")

    check("with FrappeClient(...) as c: logs in and logs out on exit", context_manager)

    print(f"python client: {PASSED} passed, 0 failed", flush=True)


def check_upload(client, url, tag, docname):
    """/api/method/upload_file (multipart, Frappe's form fields) and the File DocType.

    frappe-client has no upload method; this posts through its requests session, as Frappe's
    own upload form does."""
    content = f"hello from {tag}\n".encode()
    fname = f"{tag}-note.txt"
    uploaded = {}

    def upload_public():
        res = client.session.post(
            url + "/api/method/upload_file",
            files={"file": (fname, content, "text/plain")},
            data={"is_private": "0", "folder": "Home", "doctype": "Item", "docname": docname},
            headers={"Accept": "application/json"},
        )
        eq(res.status_code, 200, f"upload_file status ({res.text})")
        doc = res.json().get("message")
        ok(isinstance(doc, dict), f"upload_file answer: {res.text}")
        eq(doc.get("doctype"), "File", "uploaded doc's doctype")
        eq(doc.get("file_name"), fname, "file_name")
        ok(str(doc.get("file_url", "")).startswith("/files/"), f"public file_url: {doc.get('file_url')!r}")
        eq(int(doc.get("is_private")), 0, "is_private")
        eq((doc.get("attached_to_doctype"), doc.get("attached_to_name")), ("Item", docname), "attached_to")
        eq(int(doc.get("file_size")), len(content), "file_size")
        uploaded.update(doc)

    check("upload_file (public, attached to an Item) answers the File doc", upload_public)

    def fetch_public():
        res = requests.get(url + uploaded["file_url"])
        eq(res.status_code, 200, f"GET {uploaded['file_url']}")
        eq(res.content, content, "the served file's bytes")

    check("the public file_url serves the uploaded bytes, without logging in", fetch_public)

    def file_doc():
        doc = client.get_doc("File", uploaded["name"])
        eq((doc["file_url"], doc["file_name"], doc["attached_to_name"]), (uploaded["file_url"], fname, docname), "get_doc File")
        got = client.get_list("File", fields=["name", "file_url"], filters={"attached_to_doctype": "Item", "attached_to_name": docname})
        eq(got, [{"name": uploaded["name"], "file_url": uploaded["file_url"]}], "get_list File attached to the Item")

    check("the File doc is readable and listed by its attachment", file_doc)

    private = {}

    def upload_private():
        res = client.session.post(
            url + "/api/method/upload_file",
            files={"file": (f"{tag}-secret.txt", b"private bytes", "text/plain")},
            data={"is_private": "1"},
            headers={"Accept": "application/json"},
        )
        eq(res.status_code, 200, f"upload_file status ({res.text})")
        doc = res.json()["message"]
        ok(str(doc.get("file_url", "")).startswith("/private/files/"), f"private file_url: {doc.get('file_url')!r}")
        eq(int(doc.get("is_private")), 1, "is_private")
        own = client.session.get(url + doc["file_url"])
        eq((own.status_code, own.content), (200, b"private bytes"), "private file with the session")
        anon = requests.get(url + doc["file_url"])
        ok(anon.status_code in (401, 403, 404), f"private file without a session: {anon.status_code}")
        private.update(doc)

    check("upload_file is_private=1: served to the session, refused without one", upload_private)

    def delete_files():
        for doc in (uploaded, private):
            eq(client.delete("File", doc["name"]), None, f"delete File {doc['name']}")
            eq(client.get_doc("File", doc["name"]), None, f"get_doc of the deleted File {doc['name']}")
        res = requests.get(url + uploaded["file_url"])
        eq(res.status_code, 404, "public file after its File doc is deleted")

    check("delete the File docs: their URLs stop serving", delete_files)


if __name__ == "__main__":
    main()
