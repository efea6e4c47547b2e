"""Writes a C file defining NAME (a NUL-terminated string) and NAME_len
with the bytes of FILE: python3 tools/embed.py NAME FILE > out.c"""
import sys

name, path = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
out = sys.stdout
out.write("/* Generated from %s by tools/embed.py; do not edit. */\n" % path)
out.write("const char %s[] = {\n" % name)
for i in range(0, len(data), 16):
    out.write("\t" + ", ".join("0x%02x" % b for b in data[i:i + 16]) + ",\n")
out.write("\t0x00\n};\n")
out.write("const unsigned long %s_len = %d;\n" % (name, len(data)))
