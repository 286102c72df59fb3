// Drives headless Chromium through the status page as a person would, over the DevTools protocol with
// Node's built-in WebSocket (no npm package): opens the page without a session (expects the login
// form), logs in with a wrong token and then the right one through the form, visits the pages, saves
// screenshots at desktop and phone widths, logs out. Prints one JSON report on stdout; the Rust test
// (tests/status_page.rs) asserts on it.
//
//   node drive.mjs '{"chromium": "/usr/bin/chromium", "base": "http://127.0.0.1:PORT", "token": "svt_…",
//                    "out": "target/status-page", "prefix": "sqlite",
//                    "pages": ["/", "/projects/shop"], "phone": ["/"]}'

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const job = JSON.parse(process.argv[2]);
mkdirSync(job.out, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'supervisor-chromium-'));
const browser = spawn(job.chromium, [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--hide-scrollbars', '--force-color-profile=srgb', `--user-data-dir=${profile}`,
  '--remote-debugging-port=0', 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe'] });

function cleanup() {
  try { browser.kill('SIGKILL'); } catch { /* gone */ }
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* best effort */ }
}
function fail(message) {
  cleanup();
  console.error(message);
  process.exit(1);
}
const deadline = setTimeout(() => fail('the browser session took over 120 s'), 120_000);

let chromiumLog = '';
const endpoint = await new Promise((resolve, reject) => {
  browser.stderr.on('data', (d) => {
    chromiumLog = (chromiumLog + d).slice(-20_000);
    const m = chromiumLog.match(/DevTools listening on (ws:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  browser.on('exit', (code) => reject(new Error(`chromium exited (${code}):\n${chromiumLog}`)));
}).catch((e) => fail(String(e)));

const ws = new WebSocket(endpoint);
await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('WebSocket error')); })
  .catch((e) => fail(`cannot connect to ${endpoint}: ${e}`));

let nextId = 1;
const pending = new Map();
const listeners = new Set();
ws.onmessage = (event) => {
  const msg = JSON.parse(event.data);
  if (msg.id !== undefined && pending.has(msg.id)) {
    const { resolve, reject, method } = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) reject(new Error(`${method}: ${JSON.stringify(msg.error)}`));
    else resolve(msg.result);
    return;
  }
  for (const l of [...listeners]) l(msg);
};
function send(method, params = {}, sessionId = undefined) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject, method });
    ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
  });
}

const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
const page = (method, params) => send(method, params, sessionId);

// What the page's console and the browser said (a CSP violation is a console error).
const consoleMessages = [];
// The main document's last response.
let lastDocument = null;
listeners.add((msg) => {
  if (msg.sessionId !== sessionId) return;
  if (msg.method === 'Log.entryAdded') consoleMessages.push(`${msg.params.entry.level}: ${msg.params.entry.text}`);
  if (msg.method === 'Runtime.exceptionThrown') consoleMessages.push(`exception: ${msg.params.exceptionDetails.text}`);
  if (msg.method === 'Network.responseReceived' && msg.params.type === 'Document') {
    lastDocument = { url: msg.params.response.url, status: msg.params.response.status };
  }
});
await page('Page.enable');
await page('Runtime.enable');
await page('Log.enable');
await page('Network.enable');

function next(method) {
  return new Promise((resolve) => {
    const l = (msg) => {
      if (msg.sessionId === sessionId && msg.method === method) {
        listeners.delete(l);
        resolve(msg.params);
      }
    };
    listeners.add(l);
  });
}

async function evaluate(expression) {
  const r = await page('Runtime.evaluate', { expression, returnByValue: true });
  if (r.exceptionDetails) throw new Error(`${expression}: ${JSON.stringify(r.exceptionDetails)}`);
  return r.result.value;
}

/// Navigates (or runs `action`, which navigates) and waits for the load event.
async function load(action) {
  const loaded = next('Page.loadEventFired');
  await action();
  await loaded;
}

async function describe() {
  return {
    url: await evaluate('location.href'),
    status: lastDocument?.status ?? null,
    title: await evaluate('document.title'),
    text: await evaluate('document.body.innerText'),
    html: await evaluate('document.documentElement.outerHTML'),
    scroll_width: await evaluate('document.documentElement.scrollWidth'),
  };
}

async function setWidth(width, height) {
  await page('Emulation.setDeviceMetricsOverride', {
    width, height, deviceScaleFactor: 1, mobile: width < 600,
  });
}

async function screenshot(file, width) {
  await setWidth(width, 800);
  const metrics = await page('Page.getLayoutMetrics');
  const height = Math.min(Math.ceil(metrics.cssContentSize.height), 10_000);
  await setWidth(width, height);
  const shot = await page('Page.captureScreenshot', { format: 'png' });
  writeFileSync(file, Buffer.from(shot.data, 'base64'));
  return file;
}

const name = (path) => (path === '/' ? 'overview' : path.replace(/^\//, '').replace(/\//g, '-'));
const report = { pages: {}, phone: {}, screenshots: [] };
try {
  await setWidth(1280, 900);
  // 1. No session: the browser is sent to the login form.
  await load(() => page('Page.navigate', { url: `${job.base}/` }));
  report.unauthenticated = await describe();
  // 2. A wrong token, then the right one, through the form.
  const submit = async (token) => load(() => evaluate(
    `document.getElementById('token').value = ${JSON.stringify(token)};` +
    `document.querySelector('form.login button').click();`,
  ));
  await submit('svt_not-a-real-token');
  report.wrong_token = await describe();
  await submit(job.token);
  report.logged_in = await describe();
  // 3. The pages, at desktop width, then some at phone width.
  for (const path of job.pages) {
    await setWidth(1280, 900);
    await load(() => page('Page.navigate', { url: `${job.base}${path}` }));
    report.pages[path] = await describe();
    report.screenshots.push(await screenshot(join(job.out, `${job.prefix}-${name(path)}.png`), 1280));
  }
  for (const path of job.phone) {
    await setWidth(375, 800);
    await load(() => page('Page.navigate', { url: `${job.base}${path}` }));
    const d = await describe();
    report.phone[path] = { scroll_width: d.scroll_width, url: d.url, status: d.status };
    report.screenshots.push(await screenshot(join(job.out, `${job.prefix}-${name(path)}-phone.png`), 375));
  }
  // 4. Log out: the session ends.
  await setWidth(1280, 900);
  await load(() => page('Page.navigate', { url: `${job.base}/` }));
  await load(() => evaluate(`document.querySelector('form[action="/logout"] button').click();`));
  report.logged_out = await describe();
  await load(() => page('Page.navigate', { url: `${job.base}/` }));
  report.after_logout = await describe();
  report.console = consoleMessages;
} catch (e) {
  fail(`${e.stack || e}\nconsole: ${JSON.stringify(consoleMessages)}\nchromium: ${chromiumLog.slice(-3000)}`);
}
clearTimeout(deadline);
ws.close();
cleanup();
// Exit only once the whole report is written (a pipe takes it in pieces).
process.stdout.write(JSON.stringify(report), () => process.exit(0));
