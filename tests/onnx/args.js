// Command-line flags of the tests' ONNX Runtime scripts: "--name value"
// pairs into an object; throws naming the first bad or missing flag.
'use strict';

function parseArgs(argv, required, usage) {
  const args = {};
  for (let i = 2; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument '${argv[i]}'; usage: ${usage}`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const name of required) {
    if (!args[name]) throw new Error(`--${name} is required`);
  }
  return args;
}

module.exports = {parseArgs};
