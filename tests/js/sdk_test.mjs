// Drives a docstream site with the real `frappe-js-sdk` npm client (which we did not write).
//
//   node tests/js/sdk_test.mjs <site-url> <api_key:api_secret>
//
// Prints one line per step; exits non-zero (printing the error body) on the first failure.
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

await check('db().deleteDoc the Low ToDo (cleanup)', async () => {
  const res = await db.deleteDoc('ToDo', low.name);
  assert.equal(res.message, 'ok', `delete response: ${JSON.stringify(res)}`);
  assert.equal(await db.getCount('ToDo', [['description', 'like', `%${tag}%`]]), 0);
});

await check("call().get('frappe.ping') returns pong", async () => {
  const res = await app.call().get('frappe.ping');
  assert.equal(res.message, 'pong', `ping response: ${JSON.stringify(res)}`);
});

console.log(`all ${step} frappe-js-sdk steps passed against ${url}`);
