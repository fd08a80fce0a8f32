// Drives a docstream site with the real `frappe-js-sdk` npm client (which we did not write).
//
//   node tests/js/sdk_test.mjs <site-url> <api_key:api_secret>
//
// Prints one line per step; exits non-zero (printing the error body) on the first failure.
// DOCSTREAM_TEST_UPLOAD=0 in the environment leaves out the file().uploadFile steps.
// Run by tests/js_client.rs against a fresh site; safe to re-run by hand against the same site
// (every document it creates carries a unique tag and is deleted again).

import assert from 'node:assert/strict';
import { FrappeApp } from 'frappe-js-sdk';

const [url, token] = process.argv.slice(2);
if (!url || !token || !token.includes(':')) {
  console.error('usage: node sdk_test.mjs <site-url> <api_key:api_secret>');
  process.exit(2);
}

let step = 0;
async function check(name, fn) {
  step += 1;
  try {
    const out = await fn();
    console.log(`ok ${step} - ${name}`);
    return out;
  } catch (err) {
    console.log(`not ok ${step} - ${name}`);
    console.error(`FAILED step ${step}: ${name}`);
    console.error(describe(err));
    process.exit(1);
  }
}

// An assertion failure, an SDK error object (plain object with httpStatus, exc_type, ... from
// the response body), or anything else thrown.
function describe(err) {
  if (err instanceof Error) {
    return err.stack ?? String(err);
  }
  try {
    return `error body: ${JSON.stringify(err, null, 2)}`;
  } catch {
    return String(err);
  }
}

// Resolves to the SDK's error object when `promise` rejects; fails when it resolves.
async function rejection(promise) {
  let value;
  try {
    value = await promise;
  } catch (err) {
    return err;
  }
  assert.fail(`expected the call to be rejected, it resolved with ${JSON.stringify(value)}`);
}

const tag = `sdk-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

// --- (a) cookie login with username/password -------------------------------------------------
const sessionApp = new FrappeApp(url);

await check('auth().loginWithUsernamePassword answers "Logged In"', async () => {
  const res = await sessionApp.auth().loginWithUsernamePassword({ username: 'Administrator', password: 'admin' });
  assert.equal(res.message, 'Logged In', `login response: ${JSON.stringify(res)}`);
  assert.equal(res.full_name, 'Administrator', `login response: ${JSON.stringify(res)}`);
});

await check('auth().loginWithUsernamePassword with a wrong password rejects with 401', async () => {
  const err = await rejection(
    sessionApp.auth().loginWithUsernamePassword({ username: 'Administrator', password: 'not-the-password' }),
  );
  assert.equal(err.httpStatus, 401, `error: ${JSON.stringify(err)}`);
});

// --- (b) token auth ----------------------------------------------------------------------------
const app = new FrappeApp(url, { useToken: true, token: () => token, type: 'token' });
const db = app.db();

await check('auth().getLoggedInUser with token auth is Administrator', async () => {
  const user = await app.auth().getLoggedInUser();
  assert.equal(user, 'Administrator');
});

const high = await check('db().createDoc ToDo (priority High)', async () => {
  const doc = await db.createDoc('ToDo', { description: `${tag} high`, status: 'Open', priority: 'High' });
  assert.equal(typeof doc.name, 'string', `created doc: ${JSON.stringify(doc)}`);
  assert.ok(doc.name.length > 0, `created doc: ${JSON.stringify(doc)}`);
  assert.equal(doc.description, `${tag} high`);
  assert.equal(doc.priority, 'High');
  assert.equal(doc.status, 'Open');
  assert.equal(doc.owner, 'Administrator');
  assert.equal(doc.docstatus, 0);
  assert.equal(doc.doctype, 'ToDo');
  return doc;
});

const low = await check('db().createDoc ToDo (priority Low)', async () => {
  const doc = await db.createDoc('ToDo', { description: `${tag} low`, priority: 'Low' });
  assert.equal(doc.priority, 'Low');
  assert.equal(doc.status, 'Open', 'status should default to Open');
  assert.notEqual(doc.name, high.name);
  return doc;
});

await check("db().getDocList ToDo filtered on priority = High returns exactly the High doc", async () => {
  const fields = ['name', 'description', 'priority', 'status'];
  const mine = await db.getDocList('ToDo', {
    fields,
    filters: [
      ['priority', '=', 'High'],
      ['description', 'like', `%${tag}%`],
    ],
  });
  assert.deepEqual(mine, [{ name: high.name, description: `${tag} high`, priority: 'High', status: 'Open' }]);

  // The plain filter of the brief: only High rows, ours among them, the Low one absent.
  const all = await db.getDocList('ToDo', { fields, filters: [['priority', '=', 'High']], limit: 1000 });
  assert.ok(Array.isArray(all), `getDocList result: ${JSON.stringify(all)}`);
  assert.ok(all.every((d) => d.priority === 'High'), `non-High row returned: ${JSON.stringify(all)}`);
  assert.ok(all.some((d) => d.name === high.name), `created doc missing: ${JSON.stringify(all)}`);
  assert.ok(!all.some((d) => d.name === low.name), `Low doc returned: ${JSON.stringify(all)}`);
});

await check('db().getCount ToDo with filters', async () => {
  assert.equal(await db.getCount('ToDo', [['description', 'like', `%${tag}%`]]), 2);
  assert.equal(
    await db.getCount('ToDo', [
      ['priority', '=', 'High'],
      ['description', 'like', `%${tag}%`],
    ]),
    1,
  );
  const total = await db.getCount('ToDo');
  assert.equal(typeof total, 'number', `unfiltered count: ${JSON.stringify(total)}`);
  assert.ok(total >= 2, `unfiltered count: ${total}`);
});

const low2 = await check('db().createDoc a second Low ToDo', async () => {
  const doc = await db.createDoc('ToDo', { description: `${tag} low 2`, priority: 'Low' });
  assert.equal(doc.priority, 'Low');
  return doc;
});

await check('db().getDocList ToDo with groupBy priority and count(name)', async () => {
  const groups = await db.getDocList('ToDo', {
    fields: ['priority', 'count(name) as n'],
    filters: [['description', 'like', `%${tag}%`]],
    groupBy: 'priority',
    orderBy: { field: 'n', order: 'desc' },
  });
  assert.deepEqual(groups, [
    { priority: 'Low', n: 2 },
    { priority: 'High', n: 1 },
  ]);
});

await check('db().getDocList ToDo paging with limit and limit_start', async () => {
  const page = (limit_start) =>
    db.getDocList('ToDo', {
      fields: ['description'],
      filters: [['description', 'like', `%${tag}%`]],
      orderBy: { field: 'description', order: 'asc' },
      limit: 2,
      limit_start,
    });
  assert.deepEqual(await page(0), [{ description: `${tag} high` }, { description: `${tag} low` }]);
  assert.deepEqual(await page(2), [{ description: `${tag} low 2` }]);
  assert.deepEqual(await page(4), []);
});

await check('db().updateDoc ToDo', async () => {
  const doc = await db.updateDoc('ToDo', high.name, { status: 'Closed', priority: 'Medium' });
  assert.equal(doc.name, high.name);
  assert.equal(doc.status, 'Closed');
  assert.equal(doc.priority, 'Medium');
  assert.equal(doc.description, `${tag} high`, 'an update must keep fields it was not given');
});

await check('db().getDoc sees the update', async () => {
  const doc = await db.getDoc('ToDo', high.name);
  assert.equal(doc.name, high.name);
  assert.equal(doc.status, 'Closed');
  assert.equal(doc.priority, 'Medium');
  assert.equal(doc.description, `${tag} high`);
  assert.equal(doc.modified_by, 'Administrator');
  assert.equal(
    await db.getCount('ToDo', [
      ['priority', '=', 'High'],
      ['description', 'like', `%${tag}%`],
    ]),
    0,
  );
});

await check('db().deleteDoc ToDo', async () => {
  const res = await db.deleteDoc('ToDo', high.name);
  assert.equal(res.message, 'ok', `delete response: ${JSON.stringify(res)}`);
});

await check('db().getDoc of the deleted ToDo rejects with 404', async () => {
  const err = await rejection(db.getDoc('ToDo', high.name));
  assert.equal(err.httpStatus, 404, `error: ${JSON.stringify(err)}`);
  assert.equal(err.exc_type, 'DoesNotExistError', `error: ${JSON.stringify(err)}`);
});

// --- (c) grouping with aggregates, getValue, renameDoc on Items --------------------------------
const alpha = `${tag} Alpha`;
const beta = `${tag} Beta`;
const itemCode = (i) => `${tag}-I${i}`;
const rates = { 1: [alpha, 10], 2: [alpha, 20], 3: [alpha, 30], 4: [beta, 5], 5: [beta, 7] };
const ofTag = [['item_code', 'like', `${tag}-%`]];

await check('db().createDoc two Item Groups and five Items', async () => {
  for (const group of [alpha, beta]) {
    const doc = await db.createDoc('Item Group', { item_group_name: group });
    assert.equal(doc.name, group);
  }
  for (const [i, [group, rate]] of Object.entries(rates)) {
    const doc = await db.createDoc('Item', { item_code: itemCode(i), item_group: group, standard_rate: rate });
    assert.equal(doc.name, itemCode(i));
    assert.equal(doc.item_group, group);
    assert.equal(doc.standard_rate, rate);
  }
});

await check('db().getDocList Item with groupBy item_group and count/sum/avg/min/max', async () => {
  const groups = await db.getDocList('Item', {
    fields: [
      'item_group',
      'count(name) as n',
      'sum(standard_rate) as total',
      'avg(standard_rate) as mean',
      'min(standard_rate) as lo',
      'max(standard_rate) as hi',
    ],
    filters: ofTag,
    groupBy: 'item_group',
    orderBy: { field: 'item_group', order: 'asc' },
  });
  assert.deepEqual(groups, [
    { item_group: alpha, n: 3, total: 60, mean: 20, lo: 10, hi: 30 },
    { item_group: beta, n: 2, total: 12, mean: 6, lo: 5, hi: 7 },
  ]);
});

await check('db().getDocList Item with aggregates and no groupBy', async () => {
  const all = await db.getDocList('Item', { fields: ['count(name) as n', 'max(standard_rate) as hi'], filters: ofTag });
  assert.deepEqual(all, [{ n: 5, hi: 30 }]);
});

await check('db().getValue Item by filters', async () => {
  const res = await db.getValue('Item', ['name', 'standard_rate'], [
    ['item_group', '=', beta],
    ['standard_rate', '>', 6],
  ]);
  assert.deepEqual(res.message, { name: itemCode(5), standard_rate: 7 }, `getValue response: ${JSON.stringify(res)}`);
});

await check('db().renameDoc Item; the old name is gone', async () => {
  const res = await db.renameDoc('Item', itemCode(5), `${itemCode(5)}-renamed`);
  assert.equal(res.message, `${itemCode(5)}-renamed`, `rename response: ${JSON.stringify(res)}`);
  const doc = await db.getDoc('Item', `${itemCode(5)}-renamed`);
  assert.equal(doc.item_code, `${itemCode(5)}-renamed`);
  assert.equal(doc.standard_rate, 7);
  const err = await rejection(db.getDoc('Item', itemCode(5)));
  assert.equal(err.httpStatus, 404, `error: ${JSON.stringify(err)}`);
});

// --- (d) single doctype -------------------------------------------------------------------------
await check("db().setValue then db().getSingleValue on Global Defaults' default_currency", async () => {
  const before = (await db.getSingleValue('Global Defaults', 'default_currency')).message;
  const currency = before === 'JPY' ? 'SEK' : 'JPY';
  const set = await db.setValue('Global Defaults', 'Global Defaults', 'default_currency', currency);
  assert.equal(set.message.default_currency, currency, `setValue response: ${JSON.stringify(set)}`);
  const res = await db.getSingleValue('Global Defaults', 'default_currency');
  assert.deepEqual(res, { message: currency }, `getSingleValue response: ${JSON.stringify(res)}`);
  if (before != null) {
    await db.setValue('Global Defaults', 'Global Defaults', 'default_currency', before);
    assert.equal((await db.getSingleValue('Global Defaults', 'default_currency')).message, before);
  }
});

// --- (e) file().uploadFile, only with DOCSTREAM_TEST_UPLOAD=1 ------------------------------------
if ((process.env.DOCSTREAM_TEST_UPLOAD ?? '1') === '1') {
  const content = `hello from ${tag}\n`;
  const fileName = `${tag}-note.txt`;

  const uploaded = await check('file().uploadFile a public file attached to a ToDo', async () => {
    const res = await app.file().uploadFile(new File([content], fileName, { type: 'text/plain' }), {
      isPrivate: false,
      folder: 'Home',
      doctype: 'ToDo',
      docname: low.name,
    });
    const doc = res.data.message;
    assert.equal(doc.doctype, 'File', `upload response: ${JSON.stringify(res.data)}`);
    assert.equal(doc.file_name, fileName);
    assert.ok(String(doc.file_url).startsWith('/files/'), `file_url: ${doc.file_url}`);
    assert.equal(Number(doc.is_private), 0);
    assert.equal(doc.attached_to_doctype, 'ToDo');
    assert.equal(doc.attached_to_name, low.name);
    assert.equal(Number(doc.file_size), Buffer.byteLength(content));
    return doc;
  });

  await check('the uploaded file is served at its file_url', async () => {
    const res = await fetch(new URL(uploaded.file_url, url));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), content);
  });

  await check('db().getDocList File attached to the ToDo', async () => {
    const files = await db.getDocList('File', {
      fields: ['name', 'file_url'],
      filters: [
        ['attached_to_doctype', '=', 'ToDo'],
        ['attached_to_name', '=', low.name],
      ],
    });
    assert.deepEqual(files, [{ name: uploaded.name, file_url: uploaded.file_url }]);
  });

  await check('db().deleteDoc the File; its URL stops serving', async () => {
    const res = await db.deleteDoc('File', uploaded.name);
    assert.equal(res.message, 'ok', `delete response: ${JSON.stringify(res)}`);
    const after = await fetch(new URL(uploaded.file_url, url));
    assert.equal(after.status, 404);
  });
} else {
  console.log('# file().uploadFile steps skipped (set DOCSTREAM_TEST_UPLOAD=1 to run them)');
}

await check('db().deleteDoc the Low ToDos, Items and Item Groups (cleanup)', async () => {
  for (const doc of [low, low2]) {
    const res = await db.deleteDoc('ToDo', doc.name);
    assert.equal(res.message, 'ok', `delete response: ${JSON.stringify(res)}`);
  }
  assert.equal(await db.getCount('ToDo', [['description', 'like', `%${tag}%`]]), 0);
  for (const name of [itemCode(1), itemCode(2), itemCode(3), itemCode(4), `${itemCode(5)}-renamed`]) {
    assert.equal((await db.deleteDoc('Item', name)).message, 'ok');
  }
  assert.equal(await db.getCount('Item', ofTag), 0);
  for (const name of [alpha, beta]) {
    assert.equal((await db.deleteDoc('Item Group', name)).message, 'ok');
  }
});

await check("call().get('frappe.ping') returns pong", async () => {
  const res = await app.call().get('frappe.ping');
  assert.equal(res.message, 'pong', `ping response: ${JSON.stringify(res)}`);
});

console.log(`all ${step} frappe-js-sdk steps passed against ${url}`);
