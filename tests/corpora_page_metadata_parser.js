// Reads the expected values out of page-metadata-parser's own test files.
//
//   node tests/corpora_page_metadata_parser.js <unpacked package dir>
//
// Its tests (tests/*.test.js, mocha + chai) build HTML with template literals and
// assert what the parser finds in it. Rather than parse JavaScript by hand, this runs
// those files with stand-ins: the parser returns a probe naming the HTML, the URL and
// the field asked for, and chai's assert records (probe, expected) instead of
// comparing. The library itself never runs; every HTML string and expected value is
// the test file's own. Prints a JSON list of {test, html, url, field, expected}.
"use strict";

const Module = require("module");
const path = require("path");
const fs = require("fs");

const packageDir = path.resolve(process.argv[2]);
const found = [];
const skipped = [];
const names = [];
let current = null;

const probe = (html, url, field) => ({ __probe: { html, url, field } });
const ruleName = (key) => ({ __rule: key });
const ruleSets = new Proxy({}, { get: (_, key) => ruleName(String(key)) });

const parser = {
  metadataRuleSets: ruleSets,
  buildRuleSet: (rule) => (doc, context) => probe(doc.__html, context.url, rule.__rule),
  getMetadata: (doc, url) =>
    new Proxy({}, { get: (_, key) => probe(doc.__html, url, String(key)) }),
  getProvider: () => ({ __probe: { html: null } }), // a URL-only helper: no page
};

function record(actual, expected) {
  if (actual && actual.__probe && typeof actual.__probe.html === "string") {
    found.push({ test: current, ...actual.__probe, expected });
  } else {
    skipped.push(current);
  }
}

const assert = { equal: record, deepEqual: record, strictEqual: record };

const realRequire = Module.prototype.require;
Module.prototype.require = function (id) {
  if (id === "chai") return { assert };
  if (/(^|\/)parser$/.test(id)) return parser;
  if (/(^|\/)test-utils$/.test(id)) return { stringToDom: (html) => ({ __html: html }) };
  if (/(^|\/)url-utils$/.test(id)) return { parseUrl: (url) => ({ __url: url }) };
  return realRequire.apply(this, arguments);
};

global.describe = function (name, body) {
  names.push(name);
  try {
    body.call({});
  } finally {
    names.pop();
  }
};
global.it = function (name, body) {
  current = [...names, name].join(" / ");
  body.call({});
  current = null;
};

const testDir = path.join(packageDir, "tests");
for (const file of fs.readdirSync(testDir).sort()) {
  if (file.endsWith(".test.js")) {
    require(path.join(testDir, file));
  }
}
process.stdout.write(JSON.stringify({ found, skipped }));
