// A sandbox: a command, a followed command fed through its pid, files.
//
//   voidbox serve --listen tcp:127.0.0.1:8080 --token-file ~/.config/voidbox/token &
//   VOIDBOX_URL=http://127.0.0.1:8080 VOIDBOX_TOKEN=$(cat ~/.config/voidbox/token) \
//     node examples/sandbox-exec.mjs

import { VoidboxClient } from '../dist/index.js';

const client = new VoidboxClient(); // $VOIDBOX_URL, $VOIDBOX_TOKEN
const sandbox = await client.sandboxes.create({ config: { memory_mb: 256 }, timeoutSecs: 300 });
console.log(`sandbox ${sandbox.id} (${sandbox.info.accel}, booted in ${sandbox.info.boot_ms} ms)`);
try {
  const uname = await sandbox.exec('uname -a');
  console.log('uname:', uname.stdout.trim());

  // A followed command: its stdin written by pid, its output as bytes.
  const decoder = new TextDecoder();
  for await (const event of sandbox.execStream({ command: ['tr', 'a-z', 'A-Z'], stdinOpen: true })) {
    switch (event.event) {
      case 'started':
        await sandbox.writeStdin(event.pid, 'hello from the sdk\n', { eof: true });
        break;
      case 'stdout':
        process.stdout.write(`tr: ${decoder.decode(event.data)}`);
        break;
      case 'exit':
        console.log(`tr exited with ${event.exit_code}`);
        break;
    }
  }

  // Files below /workspace and /tmp; any bytes.
  await sandbox.write('/workspace/hello.py', 'print("hi")\n');
  await sandbox.write('/workspace/blob.bin', new Uint8Array([0, 255, 1, 254]));
  console.log('blob:', await sandbox.read('/workspace/blob.bin'));
  for (const entry of await sandbox.list('/workspace')) {
    console.log(`  ${entry.kind.padEnd(4)} ${String(entry.size).padStart(6)} ${entry.name}`);
  }
} finally {
  await sandbox.kill();
}
