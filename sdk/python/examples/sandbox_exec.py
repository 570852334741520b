"""A sandbox: run commands, follow one feeding its stdin, move files.

    VOIDBOX_URL=http://127.0.0.1:8080 VOIDBOX_TOKEN=... python sandbox_exec.py

(Without VOIDBOX_URL the client uses the daemon's default Unix socket.)
"""

from voidbox import Client


def main() -> None:
    with Client() as client, client.sandboxes.create({"memory_mb": 256}) as sb:
        print(f"sandbox {sb.id}: {sb.info.accel}, booted in {sb.info.boot_ms} ms")

        result = sb.exec(["uname", "-a"])
        print("uname:", result.stdout.strip())

        shell = sb.exec(shell="echo $GREETING from $(pwd); exit 3", env={"GREETING": "hi"}, cwd="/tmp")
        print(f"shell: {shell.stdout.strip()!r}, exit code {shell.exit_code}")

        # Follow a command and feed its stdin by pid.
        with sb.exec_stream(["tr", "a-z", "A-Z"], stdin_open=True) as stream:
            print("tr runs as pid", stream.pid)
            stream.write_stdin(b"shouted through stdin\n", eof=True)
            for event in stream:
                if event.event == "stdout":
                    print("tr:", event.text.strip())
                elif event.event == "exit":
                    print("tr exited with", event.exit_code)

        # Files: bytes in, bytes out.
        sb.write("/workspace/hello.py", "print('hello from the guest')\n")
        sb.write("/workspace/data.bin", bytes(range(256)))
        print("files:", [(f.name, f.size) for f in sb.list("/workspace")])
        print("python?", sb.exec(shell="command -v python3 || echo 'no python3 in this image'").stdout.strip())
        assert sb.read("/workspace/data.bin") == bytes(range(256))
    print("sandbox ended")


if __name__ == "__main__":
    main()
