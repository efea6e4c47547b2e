// Jest as sbx's jest recipe runs it: the tests in the run's work dir,
// TypeScript through Babel (as SandboxFusion's runtime does), in one
// process, with every tool taken from this directory's node_modules.
const path = require("path");

const nm = path.join(__dirname, "node_modules");

module.exports = {
  rootDir: process.cwd(),
  watchman: false,
  maxWorkers: 1,
  cacheDirectory: "/tmp/jest-cache",
  modulePaths: [nm],
  transform: {
    "\\.[jt]sx?$": [
      path.join(nm, "babel-jest"),
      {
        configFile: false,
        babelrc: false,
        presets: [
          [path.join(nm, "@babel/preset-env"), { targets: { node: "current" } }],
          path.join(nm, "@babel/preset-typescript"),
        ],
      },
    ],
  },
};
