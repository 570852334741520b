// E2B compatibility probe for `voidbox serve`, using the unmodified `e2b` npm SDK.
//
// Run with Node >= 20:
//   E2B_API_URL=http://127.0.0.1:PORT E2B_SANDBOX_URL=http://127.0.0.1:PORT \
//   E2B_API_KEY=e2b_<hex token> VOIDBOX_E2B_TEMPLATE=<image ref or snapshot name> \
//   E2B_NODE_MODULES=target/e2b-sdk/node/node_modules \
//   node crates/voidbox-server/tests/e2b/probe.mjs
// `e2b` is resolved with require() from E2B_NODE_MODULES (a node_modules directory) if set,
// else from the current directory upwards, else from this file's directory upwards.
// Optional: VOIDBOX_E2B_SKIP_WATCH=1 skips the watchDir step.
// Prints "ok <step>" per passed step. On the first failure prints "FAIL <step>: <why>" to
// stderr, kills the sandbox it created and exits 1.
import { createRequire } from 'node:module'
import path from 'node:path'
import { randomUUID } from 'node:crypto'

function loadE2b() {
  const anchors = []
  if (process.env.E2B_NODE_MODULES) anchors.push(path.join(path.resolve(process.env.E2B_NODE_MODULES), '_anchor.js'))
  anchors.push(path.join(process.cwd(), '_anchor.js'), import.meta.url)
  for (const a of anchors) {
    try { return createRequire(a)('e2b') } catch (e) { if (e.code !== 'MODULE_NOT_FOUND') throw e }
  }
  console.error('FAIL setup: cannot resolve the `e2b` package; set E2B_NODE_MODULES'); process.exit(1)
}
const { Sandbox, CommandExitError, NotFoundError, FileType } = loadE2b()

for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY', 'VOIDBOX_E2B_TEMPLATE']) {
  if (!process.env[v]) { console.error(`FAIL setup: environment variable ${v} is not set`); process.exit(1) }
}
const TEMPLATE = process.env.VOIDBOX_E2B_TEMPLATE
const SKIP_WATCH = process.env.VOIDBOX_E2B_SKIP_WATCH === '1'
const RUN = randomUUID().slice(0, 8)
const BASE = `/tmp/e2b-probe-js-${RUN}`
const META = { probe: RUN, lang: 'js' }
const created = []

class Fail extends Error {}
const check = (cond, msg) => { if (!cond) throw new Fail(msg) }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
// Equal as JSON, the keys of objects in any order.
const canon = (v) => Array.isArray(v) ? v.map(canon)
  : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]))
  : v
const same = (a, b) => JSON.stringify(canon(a)) === JSON.stringify(canon(b))

async function step(name, fn) {
  try {
    await fn()
  } catch (e) {
    const why = e instanceof Fail ? e.message : `unexpected ${e?.name ?? typeof e}: ${e?.message ?? e}`
    if (!(e instanceof Fail)) console.error(e)
    console.error(`FAIL ${name}: ${why}`)
    for (const id of created) await Sandbox.kill(id).catch(() => {})
    process.exit(1)
  }
  console.log(`ok ${name}`)
}

// Await p, require it to reject (optionally with an instance of cls); return the error.
async function rejects(p, cls, what) {
  let res
  try { res = await p } catch (e) {
    if (cls && !(e instanceof cls)) throw new Fail(`${what}: expected ${cls.name}, got ${e?.name}: ${e?.message ?? e}`)
    return e
  }
  throw new Fail(`${what}: expected a rejection, resolved with ${JSON.stringify(res)}`)
}

async function countProcs(sbx, needle) {
  const cmd = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done" +
    ` | grep -c '^${needle}' || true`
  return Number((await sbx.commands.run(cmd)).stdout.trim() || '0')
}

let sbx, ENVD
const versionAtLeast = (v, min) => {
  const [a, b] = [v, min].map((x) => x.split(/[.+-]/).slice(0, 3).map(Number))
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] > b[i]
  return true
}
await step('create (unknown template raises, mentions template)', async () => {
  const bogus = `voidbox-probe-no-such-template-${RUN}`
  const e = await rejects(Sandbox.create(bogus).then((s) => { created.push(s.sandboxId); return s.sandboxId }), null, 'create(unknown)')
  check(String(e.message).includes(bogus), `error message does not mention the template: ${e.message}`)
})

await step('create', async () => {
  sbx = await Sandbox.create(TEMPLATE, { timeoutMs: 300_000, envs: { FOO: 'bar-from-create' }, metadata: META })
  created.push(sbx.sandboxId)
  check(sbx.sandboxId, 'empty sandboxId')
  ENVD = sbx.envdApi?.version ?? (await sbx.getInfo()).envdVersion
  console.log(`   sandbox ${sbx.sandboxId} envd ${ENVD}`)
})

await step('commands.run foreground + create envs', async () => {
  const r = await sbx.commands.run('echo $FOO')
  check(r.exitCode === 0 && r.stdout === 'bar-from-create\n', `got ${JSON.stringify(r)}`)
})

await step('commands.run envs / cwd / user=root', async () => {
  const r1 = await sbx.commands.run('echo "$A-$B-$FOO"', { envs: { A: '1', B: 'two' } })
  check(r1.stdout === '1-two-bar-from-create\n', `envs: stdout ${JSON.stringify(r1.stdout)}`)
  const r2 = await sbx.commands.run('pwd', { cwd: '/tmp' })
  check(r2.stdout === '/tmp\n', `cwd: stdout ${JSON.stringify(r2.stdout)}`)
  const r3 = await sbx.commands.run('id -un', { user: 'root' })
  check(r3.stdout === 'root\n', `user: stdout ${JSON.stringify(r3.stdout)}`)
})

await step('commands.run non-zero exit -> CommandExitError', async () => {
  const e = await rejects(sbx.commands.run('echo out; echo oops >&2; exit 3'), CommandExitError, 'exit 3')
  check(e.exitCode === 3 && e.stderr === 'oops\n' && e.stdout === 'out\n',
    `exitCode ${e.exitCode} stdout ${JSON.stringify(e.stdout)} stderr ${JSON.stringify(e.stderr)}`)
})

await step('commands.run timeout (sleep 30, timeoutMs=2000)', async () => {
  const t0 = Date.now()
  const e = await rejects(sbx.commands.run('sleep 30', { timeoutMs: 2000 }), null, 'timeoutMs=2000')
  check(Date.now() - t0 < 10_000, `rejected (${e?.name}) only after ${Date.now() - t0}ms`)
  await sleep(1000)
  check(await countProcs(sbx, 'sleep 30') === 0, "'sleep 30' still running after the timeout")
})

await step('commands.run background + wait', async () => {
  const h = await sbx.commands.run('sleep 1; echo done', { background: true })
  check(Number.isInteger(h.pid) && h.pid > 0, `pid ${h.pid}`)
  const r = await h.wait()
  check(r.exitCode === 0 && r.stdout === 'done\n', `got ${JSON.stringify(r)}`)
})

await step('commands.run onStdout/onStderr streaming', async () => {
  const out = [], err = [], times = []
  const r = await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.5; done; echo bad >&2', {
    onStdout: (d) => { out.push(d); times.push(Date.now()) }, onStderr: (d) => err.push(d),
  })
  const end = Date.now()
  check(out.join('') === 'line1\nline2\nline3\n' && r.stdout === out.join(''), `stdout chunks ${JSON.stringify(out)}`)
  check(err.join('') === 'bad\n', `stderr chunks ${JSON.stringify(err)}`)
  check(out.length >= 2 && end - times[0] > 700, `not streamed: ${out.length} chunk(s), first ${end - times[0]}ms before the end`)
})

await step('commands.sendStdin (stdin: true, head -n1)', async () => {
  const h = await sbx.commands.run('head -n1', { background: true, stdin: true, timeoutMs: 20_000 })
  await sbx.commands.sendStdin(h.pid, 'hello-stdin\n')
  const r = await h.wait()
  check(r.stdout === 'hello-stdin\n', `head: stdout ${JSON.stringify(r.stdout)}`)
})

// The SDK refuses closeStdin below envd 0.5.2.
if (!versionAtLeast(ENVD, '0.5.2')) console.log(`skip commands.closeStdin: envd ${ENVD} < 0.5.2`)
else await step('commands.closeStdin (cat)', async () => {
  const h2 = await sbx.commands.run('cat', { background: true, stdin: true, timeoutMs: 20_000 })
  await h2.sendStdin(new Uint8Array([0x61, 0x62, 0x63, 0xc3, 0xa9]))
  await sbx.commands.closeStdin(h2.pid)
  const r2 = await h2.wait()
  check(r2.stdout === 'abcé', `cat: stdout ${JSON.stringify(r2.stdout)}`)
})

await step('commands.list', async () => {
  const h = await sbx.commands.run('sleep 300', { background: true, timeoutMs: 60_000 })
  const mine = (await sbx.commands.list()).filter((p) => p.pid === h.pid)
  check(mine.length === 1 && mine[0].cmd === '/bin/bash' && mine[0].args.at(-1) === 'sleep 300', `got ${JSON.stringify(mine)}`)
  check(await sbx.commands.kill(h.pid) === true, 'kill of listed process')
})

await step('commands.kill(pid) -> true, wait rejects, second kill -> false, handle.kill()', async () => {
  const h = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 30_000 })
  const t0 = Date.now()
  check(await sbx.commands.kill(h.pid) === true, 'kill() not true')
  const e = await rejects(h.wait(), null, 'wait() after kill')
  check(Date.now() - t0 < 10_000, 'wait() took >10s after kill')
  if (e instanceof CommandExitError) check(e.exitCode !== 0, `killed exitCode ${e.exitCode}`)
  check(await sbx.commands.kill(h.pid) === false, 'second kill of a dead pid not false')
  const h2 = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 30_000 })
  check(await h2.kill() === true, 'handle.kill() not true')
  await rejects(h2.wait(), null, 'wait() after handle.kill()')
  check(await countProcs(sbx, 'sleep 600') === 0, "'sleep 600' still running")
})

const TEXT = 'héllo\nwörld\n'
const BIN = new Uint8Array([...Array(256).keys(), 0xff, 0xfe, 0x00, 0x80])
await step('files.write/read text + bytes (multipart and octet-stream)', async () => {
  const info = await sbx.files.write(`${BASE}/hello.txt`, TEXT) // parent dir does not exist yet
  check(info.path === `${BASE}/hello.txt` && info.name === 'hello.txt', `write info ${JSON.stringify(info)}`)
  check(await sbx.files.read(`${BASE}/hello.txt`) === TEXT, 'text read back differs')
  check((await sbx.commands.run(`cat ${BASE}/hello.txt`)).stdout === TEXT, 'guest sees other content')
  await sbx.files.write(`${BASE}/bin.dat`, BIN)
  const got = await sbx.files.read(`${BASE}/bin.dat`, { format: 'bytes' })
  check(Buffer.from(got).equals(Buffer.from(BIN)), `bytes read back differ (${got.length} vs ${BIN.length})`)
  await sbx.files.write(`${BASE}/oct.dat`, BIN, { useOctetStream: true })
  check(Buffer.from(await sbx.files.read(`${BASE}/oct.dat`, { format: 'bytes' })).equals(Buffer.from(BIN)), 'octet-stream round trip')
  await rejects(sbx.files.read(`${BASE}/nope.txt`), NotFoundError, 'read missing')
})

await step('files.makeDir / list / exists / getInfo', async () => {
  check(await sbx.files.makeDir(`${BASE}/sub/deep`) === true, 'first makeDir not true')
  check(await sbx.files.makeDir(`${BASE}/sub/deep`) === false, 'second makeDir not false')
  const entries = Object.fromEntries((await sbx.files.list(BASE)).map((e) => [e.name, e]))
  check(['hello.txt', 'bin.dat', 'oct.dat', 'sub'].every((n) => n in entries), `names ${Object.keys(entries)}`)
  check(entries['bin.dat'].type === FileType.FILE && entries.sub.type === FileType.DIR, 'entry types')
  check(entries['bin.dat'].size === BIN.length && entries['bin.dat'].path === `${BASE}/bin.dat`, `bin.dat ${JSON.stringify(entries['bin.dat'])}`)
  check(await sbx.files.exists(`${BASE}/hello.txt`) === true, 'exists(hello.txt) not true')
  check(await sbx.files.exists(`${BASE}/nope.txt`) === false, 'exists(nope.txt) not false')
  const gi = await sbx.files.getInfo(`${BASE}/bin.dat`)
  check(gi.type === FileType.FILE && gi.size === BIN.length && gi.name === 'bin.dat', `getInfo ${JSON.stringify(gi)}`)
})

await step('files.rename / remove', async () => {
  const ent = await sbx.files.rename(`${BASE}/hello.txt`, `${BASE}/renamed.txt`)
  check(ent.path === `${BASE}/renamed.txt`, `rename returned ${JSON.stringify(ent)}`)
  check(await sbx.files.read(`${BASE}/renamed.txt`) === TEXT, 'content at new path')
  check(await sbx.files.exists(`${BASE}/hello.txt`) === false, 'old path still exists')
  await sbx.files.remove(`${BASE}/renamed.txt`)
  await sbx.files.remove(`${BASE}/sub`)
  check(!(await sbx.files.exists(`${BASE}/renamed.txt`)) && !(await sbx.files.exists(`${BASE}/sub`)), 'removed paths still exist')
})

if (SKIP_WATCH) console.log('skip files.watchDir: VOIDBOX_E2B_SKIP_WATCH=1')
else await step('files.watchDir (WatchDir server stream)', async () => {
  const seen = []
  let exitErr
  const w = await sbx.files.watchDir(BASE, (ev) => seen.push(ev), { timeoutMs: 30_000, onExit: (e) => { exitErr = e } })
  await sbx.files.write(`${BASE}/watched.txt`, 'x')
  for (let i = 0; i < 25 && !seen.some((ev) => ev.name === 'watched.txt'); i++) await sleep(200)
  await w.stop()
  check(seen.some((ev) => ev.name === 'watched.txt'),
    `no event for watched.txt within 5s; got ${JSON.stringify(seen)}; onExit error ${exitErr}`)
})

await step('Sandbox.list (all pages + metadata query)', async () => {
  const pager = Sandbox.list()
  const found = {}
  while (pager.hasNext) for (const i of await pager.nextItems()) found[i.sandboxId] = i
  check(found[sbx.sandboxId], `${sbx.sandboxId} not in ${Object.keys(found)}`)
  check(same(found[sbx.sandboxId].metadata, META), `metadata ${JSON.stringify(found[sbx.sandboxId].metadata)}`)
  check(found[sbx.sandboxId].state === 'running', `state ${found[sbx.sandboxId].state}`)
  const items = await Sandbox.list({ query: { metadata: { probe: RUN } } }).nextItems()
  check(same(items.map((i) => i.sandboxId), [sbx.sandboxId]), `metadata query returned ${items.map((i) => i.sandboxId)}`)
})

await step('Sandbox.connect(id) + run on connected object', async () => {
  const sbx2 = await Sandbox.connect(sbx.sandboxId)
  check(sbx2.sandboxId === sbx.sandboxId, `connected to ${sbx2.sandboxId}`)
  check((await sbx2.commands.run('echo $FOO')).stdout === 'bar-from-create\n', 'run via connected object')
  check(Buffer.from(await sbx2.files.read(`${BASE}/oct.dat`, { format: 'bytes' })).equals(Buffer.from(BIN)), 'read via connected object')
  check(await sbx.connect() === sbx, 'instance connect() did not return this')
})

await step('setTimeout + getInfo', async () => {
  await sbx.setTimeout(600_000)
  const now = Date.now()
  const info = await sbx.getInfo()
  check(info.sandboxId === sbx.sandboxId, `sandboxId ${info.sandboxId}`)
  const t = info.templateId
  check([t, info.name].includes(TEMPLATE) || t.endsWith(TEMPLATE) || TEMPLATE.endsWith(t), `templateId ${t} name ${info.name}`)
  check(same(info.metadata, META), `metadata ${JSON.stringify(info.metadata)}`)
  check(info.startedAt.getTime() <= now, `startedAt ${info.startedAt.toISOString()} is in the future`)
  const left = (info.endAt.getTime() - now) / 1000
  check(left > 540 && left < 660, `endAt ${info.endAt.toISOString()} is ${left}s away, expected ~600`)
  check(info.state === 'running' && info.cpuCount > 0 && info.memoryMB > 0, `info ${JSON.stringify(info)}`)
  check((await Sandbox.getInfo(sbx.sandboxId)).sandboxId === sbx.sandboxId, 'static getInfo')
})

await step('kill -> true, kill again -> false, connect/getInfo after kill -> NotFound', async () => {
  check(await sbx.kill() === true, 'kill() not true')
  check(await Sandbox.kill(sbx.sandboxId) === false, 'second kill not false')
  await rejects(Sandbox.connect(sbx.sandboxId), NotFoundError, 'connect after kill')
  await rejects(Sandbox.getInfo(sbx.sandboxId), NotFoundError, 'getInfo after kill')
})

console.log('ALL OK (js)')
