#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal, for tests of interactive CLI prompts without native npm modules.

Usage: pty-run.py [--stdin-pipe] -- command args...

The child's stdout (and, unless --stdin-pipe, its stdin) is the slave side of a new pty (120x40), which is
also its controlling terminal; its stderr stays our stderr. What the child writes to the terminal is copied
to our stdout; what arrives on our stdin is typed into the terminal. Exits with the child's exit code
(128 + signal when it was killed).
"""
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios


def main() -> int:
    args = sys.argv[1:]
    stdin_pipe = False
    while args and args[0] != '--':
        if args[0] == '--stdin-pipe':
            stdin_pipe = True
        args = args[1:]
    args = args[1:]
    if not args:
        print('usage: pty-run.py [--stdin-pipe] -- command args...', file=sys.stderr)
        return 2

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))

    def own_terminal() -> None:
        # A session of its own with the pty as controlling terminal, as a shell would give it.
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if stdin_pipe else slave,
        stdout=slave,
        stderr=None,
        preexec_fn=own_terminal,
        close_fds=True,
    )
    os.close(slave)  # so reading the master fails with EIO once the child (and its children) let go of it

    inputs = [master, sys.stdin.fileno()]
    out = sys.stdout.buffer
    while True:
        try:
            ready, _, _ = select.select(inputs, [], [], 0.2)
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b''
            if not data:
                break
            out.write(data)
            out.flush()
        if sys.stdin.fileno() in ready:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                inputs.remove(sys.stdin.fileno())
                if stdin_pipe and child.stdin:
                    child.stdin.close()
            elif stdin_pipe and child.stdin:
                child.stdin.write(data)
                child.stdin.flush()
            else:
                os.write(master, data)
        if not ready and child.poll() is not None:
            # The child is gone; a grandchild may still hold the pty, but nothing more is ours to relay.
            break
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == '__main__':
    sys.exit(main())
