#!/usr/bin/env node
// Stand-in for CML in act runs: appends one JSON line per call to $CML_STANDIN_LOG with
// the arguments, the markdown file's content and whether a token was given. Posts nothing.
'use strict';
const fs = require('fs');
const path = require('path');

const args = process.argv.slice(2);
const log = process.env.CML_STANDIN_LOG;
if (!log) {
  console.error('cml stand-in: CML_STANDIN_LOG is not set');
  process.exit(2);
}
// The markdown file is the last positional argument (`cml comment update [options] <file>`).
const positional = args.filter((a) => !a.startsWith('--'));
const file = positional.length > 2 ? positional[positional.length - 1] : null;
let body = null;
if (file) {
  try {
    body = fs.readFileSync(path.resolve(file), 'utf-8');
  } catch (err) {
    console.error(`cml stand-in: cannot read ${file}: ${err.message}`);
    process.exit(1);
  }
}
const record = {
  args,
  cwd: process.cwd(),
  body,
  token_present: Boolean(process.env.REPO_TOKEN || process.env.GITHUB_TOKEN),
  event: process.env.GITHUB_EVENT_NAME || null,
};
fs.appendFileSync(log, JSON.stringify(record) + '\n');
console.log(`cml stand-in: recorded \`cml ${args.join(' ')}\``);
