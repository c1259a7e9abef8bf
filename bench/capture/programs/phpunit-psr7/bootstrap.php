<?php
// Debian installs both packages under /usr/share/php with their own
// class-map autoloaders.
require_once 'Http/Psr7Test/autoload.php';
require_once 'GuzzleHttp/Psr7/autoload.php';
